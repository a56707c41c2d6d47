//! Images stored as files: class-per-folder trees (torchvision `ImageFolder`), flat folders
//! (LSUN-C/LSUN-R/iSUN), and OpenOOD v1.5 `benchmark_imglist/*.txt` lists (METHODS §9.7). All
//! open to a `FileList`: paths and labels known up front, pixels decoded when asked for.

use crate::error::{DataError, read_file, utf8_text};
use crate::source::{ImageSource, Rgb};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The extensions torchvision's `ImageFolder` accepts (`IMG_EXTENSIONS`) that we can decode.
const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPEG"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Decode an image file to RGB (grey, grey+alpha, RGBA and 16-bit images are converted, as
/// PIL's `convert('RGB')` does in every loader of the field).
pub fn decode(path: &Path) -> Result<Rgb, DataError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Missing {
                path: path.to_owned(),
                what: "image file listed by the dataset".into(),
                layout: "    (the file named by the list or folder scan)".into(),
                hint: "the dataset is incomplete; run `data check` and re-extract the archive"
                    .into(),
            });
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    decode_bytes(path, &bytes)
}

/// The largest side an image file may declare. Datasets of the field top out far below it
/// (ImageNet's largest images are about 10k pixels a side).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most pixels an image file may declare: 8192 x 8192, i.e. 192 MiB as 8-bit RGB.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Decode image bytes to RGB. The header's dimensions are checked against [`MAX_IMAGE_SIDE`]
/// and [`MAX_IMAGE_PIXELS`] before any pixel is decoded, and the decoder's own allocations are
/// capped, so a decompression bomb (a small file declaring a huge image) is an error naming the
/// file, not an out-of-memory kill of a training run.
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<Rgb, DataError> {
    let error = |message: String| DataError::Decode {
        path: path.to_owned(),
        message,
    };
    let mut limits = image::Limits::default();
    // Decoded buffer (up to 16-bit RGBA) plus the decoder's working memory.
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 + (64 << 20));
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| error(e.to_string()))?;
    reader.limits(limits);
    // The header is read once; its size is checked here, so the error says what was declared
    // and what is allowed, before any pixel is decoded.
    let decoder = reader.into_decoder().map_err(|e| error(e.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS
    {
        return Err(error(format!(
            "the header declares {width}x{height} pixels, more than the limit of \
             {MAX_IMAGE_SIDE} per side and {MAX_IMAGE_PIXELS} in all (a corrupt header or a \
             decompression bomb)"
        )));
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| error(e.to_string()))?;
    Ok(Rgb::from_image(img.to_rgb8()))
}

/// A list of image files with labels.
#[derive(Debug)]
pub struct FileList {
    name: String,
    /// The folder every file lives under (the scanned folder, or a list's data folder): files
    /// are hashed relative to it, so the list hash does not depend on where the data sits.
    root: PathBuf,
    pub files: Vec<PathBuf>,
    pub labels: Vec<usize>,
    /// Class names (folder names for class-per-folder trees; empty otherwise).
    pub classes: Vec<String>,
}

impl FileList {
    /// A class-per-folder tree: sorted sub-folder names are the classes (torchvision
    /// `ImageFolder`), images found recursively in each, in sorted order.
    pub fn class_folders(
        root: &Path,
        name: &str,
        layout: &str,
        hint: &str,
    ) -> Result<Self, DataError> {
        let dirs = sorted_entries(
            root,
            "image folder (one sub-folder per class)",
            layout,
            hint,
        )?;
        let classes: Vec<PathBuf> = dirs.into_iter().filter(|p| p.is_dir()).collect();
        if classes.is_empty() {
            return Err(DataError::corrupt(
                root,
                "folder",
                "no class sub-folders; expected <root>/<class>/<image>.jpg",
            ));
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (label, dir) in classes.iter().enumerate() {
            let mut found = Vec::new();
            walk(dir, &mut found)?;
            labels.extend(std::iter::repeat_n(label, found.len()));
            files.extend(found);
        }
        if files.is_empty() {
            return Err(DataError::corrupt(
                root,
                "folder",
                "class sub-folders hold no .jpg/.jpeg/.png images",
            ));
        }
        let classes = classes
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        Ok(Self {
            name: name.to_owned(),
            root: root.to_owned(),
            files,
            labels,
            classes,
        })
    }

    /// Every image under a folder, recursively and in sorted order, label 0 (OOD sets whose
    /// class structure is unused: LSUN-C, LSUN-R, iSUN, Textures, Places365).
    pub fn flat(root: &Path, name: &str, layout: &str, hint: &str) -> Result<Self, DataError> {
        sorted_entries(root, "image folder", layout, hint)?;
        let mut files = Vec::new();
        walk(root, &mut files)?;
        if files.is_empty() {
            return Err(DataError::corrupt(
                root,
                "folder",
                "holds no .jpg/.jpeg/.png images",
            ));
        }
        let labels = vec![0; files.len()];
        Ok(Self {
            name: name.to_owned(),
            root: root.to_owned(),
            files,
            labels,
            classes: Vec::new(),
        })
    }

    /// An OpenOOD image list: each line is `<path relative to data_dir> <label>`, split on the
    /// first space (`openood/datasets/imglist_dataset.py`). `<label>` is an integer, or a dict
    /// literal (then the label is 0, as OpenOOD sets it). Negative labels (soft labels in
    /// OpenOOD) become 0: they only occur in OOD/outlier lists, whose labels are unused.
    /// `num_classes = Some(k)` checks ID labels are in 0..k.
    pub fn imglist(
        list: &Path,
        data_dir: &Path,
        name: &str,
        num_classes: Option<usize>,
        layout: &str,
        hint: &str,
    ) -> Result<Self, DataError> {
        Self::list(list, data_dir, name, num_classes, layout, hint, |line| {
            line.split_once(' ').unwrap_or((line, ""))
        })
    }

    /// A MixOE list (`info/<ds>/{train,val,test}.txt`, METHODS §9.9; `utils/dataset.py`):
    /// `relative/path label`; when a line has more than two space-separated tokens, the first
    /// two joined by a space are the path (file names with one space) and the third the label.
    pub fn mixoe_list(
        list: &Path,
        data_dir: &Path,
        name: &str,
        num_classes: Option<usize>,
        layout: &str,
        hint: &str,
    ) -> Result<Self, DataError> {
        Self::list(list, data_dir, name, num_classes, layout, hint, |line| {
            let tokens: Vec<&str> = line.split(' ').collect();
            if tokens.len() > 2 {
                let cut = tokens[0].len() + 1 + tokens[1].len();
                (&line[..cut], line[cut..].trim_start())
            } else {
                line.split_once(' ').unwrap_or((line, ""))
            }
        })
    }

    /// A list file: `split` cuts a line into (relative path, label text).
    fn list(
        list: &Path,
        data_dir: &Path,
        name: &str,
        num_classes: Option<usize>,
        layout: &str,
        hint: &str,
        split: impl Fn(&str) -> (&str, &str),
    ) -> Result<Self, DataError> {
        let text = read_file(list, "image list", layout, hint)?;
        if !data_dir.is_dir() {
            return Err(DataError::missing(
                data_dir,
                "image folder the list refers to",
                layout,
                hint,
            ));
        }
        let text = utf8_text(list, text)?;
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("line {}", i + 1);
            let (rel, rest) = split(line);
            let rel_path = Path::new(rel);
            if rel_path.is_absolute()
                || rel_path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(DataError::corrupt(
                    list,
                    at,
                    format!(
                        "path `{rel}` leaves the data folder; expected a relative path without `..` (inside {})",
                        data_dir.display()
                    ),
                ));
            }
            let rest = rest.trim();
            let label = if rest.starts_with('{') || rest.is_empty() {
                0
            } else {
                let v: i64 = rest.parse().map_err(|_| {
                    DataError::corrupt(
                        list,
                        format!("line {}", i + 1),
                        format!("label `{rest}` is not an integer or a dict"),
                    )
                })?;
                let v = v.max(0) as usize;
                if let Some(k) = num_classes
                    && v >= k
                {
                    return Err(DataError::corrupt(
                        list,
                        at,
                        format!("label {v} is out of range: expected 0..{k}"),
                    ));
                }
                v
            };
            files.push(data_dir.join(rel_path));
            labels.push(label);
        }
        if files.is_empty() {
            return Err(DataError::corrupt(
                list,
                "line 1",
                "the list is empty; expected `<relative path> <label>` lines",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            root: data_dir.to_owned(),
            files,
            labels,
            classes: Vec::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A list from its parts; `root` is the folder every file lives under (hashed relative to it).
    pub(crate) fn from_parts(
        name: &str,
        root: &Path,
        files: Vec<PathBuf>,
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            root: root.to_owned(),
            files,
            labels,
            classes,
        }
    }

    /// The items whose label is in `classes`, relabelled by the label's rank among the sorted
    /// `classes` (MixOE's `FinegrainedDataset(class_list=...)`: `{k: i for i, k in
    /// enumerate(sorted(class_list))}`; items of other labels are dropped).
    pub fn keep_classes(&self, classes: &[usize]) -> Self {
        let mut sorted = classes.to_vec();
        sorted.sort_unstable();
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (f, &l) in self.files.iter().zip(&self.labels) {
            if let Ok(rank) = sorted.binary_search(&l) {
                files.push(f.clone());
                labels.push(rank);
            }
        }
        Self::from_parts(&self.name, &self.root, files, labels, Vec::new())
    }

    /// The items at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self::from_parts(
            &self.name,
            &self.root,
            indices.iter().map(|&i| self.files[i].clone()).collect(),
            indices.iter().map(|&i| self.labels[i]).collect(),
            self.classes.clone(),
        )
    }

    /// `lists` one after the other (MixOE pools the other datasets' test lists), hashed
    /// relative to `root`, which holds every list's files.
    pub fn concat(name: &str, root: &Path, lists: &[&FileList]) -> Self {
        Self::from_parts(
            name,
            root,
            lists.iter().flat_map(|l| l.files.iter().cloned()).collect(),
            lists
                .iter()
                .flat_map(|l| l.labels.iter().copied())
                .collect(),
            Vec::new(),
        )
    }

    /// Files of the list that do not exist (for `data check`).
    pub fn missing_files(&self) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|f| !f.is_file())
            .map(PathBuf::as_path)
            .collect()
    }
}

fn sorted_entries(
    root: &Path,
    what: &str,
    layout: &str,
    hint: &str,
) -> Result<Vec<PathBuf>, DataError> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::missing(root, what, layout, hint));
        }
        Err(e) => return Err(DataError::io(root, e)),
    };
    let mut out = rd
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DataError::io(root, e))?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut entries = rd
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DataError::io(dir, e))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageSource for FileList {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.files.len()
    }
    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }
    fn load(&self, index: usize) -> Result<Rgb, DataError> {
        decode(&self.files[index])
    }
    fn locate(&self, index: usize) -> String {
        self.files[index].display().to_string()
    }
    /// SHA-256 of the listing (paths relative to the root, and labels): the "list hash".
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (f, l) in self.files.iter().zip(&self.labels) {
            let rel = f.strip_prefix(&self.root).unwrap_or(f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(b" ");
            h.update(l.to_string().as_bytes());
            h.update(b"\n");
        }
        oodforge_core::config::hex(&h.finalize())
    }
}
