//! WebVision 1.0 (Li et al. 2017), the outlier set of MixOE's fine-grained setting (METHODS
//! §4.4, §9.9), read as MixOE's `utils/dataset.py::WebVision` reads it:
//!
//! 1. `info/synsets.txt`: line i (from 1) is concept i, its WordNet id the first 9 characters.
//! 2. Concepts in `exclude` are dropped (MixOE passes its `INET_SPLITS`: every ImageNet synset
//!    of the five fine-grained groups, so no outlier shows a dog, bird, car, butterfly or plane).
//! 3. `info/queries_synsets_map.txt` (`<query> <concept>` per line) gives each kept concept's
//!    search queries; query q is the folder `q%04d`.
//! 4. `google/` then `flickr/`, each a torchvision `ImageFolder` restricted to those query
//!    folders: folders sorted, files by `sorted(os.walk(folder))` then sorted names, kept when
//!    they end in one of torchvision's `IMG_EXTENSIONS` (case-insensitive).
//!
//! The order matters: MixOE draws its WebVision validation subset by index
//! (`random.sample(range(len(webvision)), n)`).

use crate::error::{DataError, read_file, utf8_text};
use crate::formats::files::FileList;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub const LAYOUT: &str = "<path>/
  info/synsets.txt               (1000 lines: `n01440764 tench, Tinca tinca`)
  info/queries_synsets_map.txt   (`<query id> <concept line number>` per line)
  google/q0001/*.jpg ...          (the resized \"small\" images)
  flickr/q0001/*.jpg ...";

pub const HINT: &str = "download WebVision 1.0's resized Google and Flickr images and info.tar from https://data.vision.ee.ethz.ch/cvl/webvision/download.html (scripts/download_finegrained.sh prints the steps)";

/// torchvision's `IMG_EXTENSIONS`: what `ImageFolder` lists (only JPEG and PNG decode here; a
/// listed file of another kind is an error when it is read, naming it).
const IMG_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// MixOE `utils/dataset.py::INET_SPLITS`: the ImageNet synsets of its five groups, which its
/// WebVision outlier set leaves out (`exclude = "mixoe"`).
pub const MIXOE_INET_SPLITS: [(&str, &[&str]); 5] = [
    (
        "dog",
        &[
            "n02089078",
            "n02102318",
            "n02096294",
            "n02099712",
            "n02112018",
            "n02113023",
            "n02110063",
            "n02099601",
            "n02097658",
            "n02115641",
            "n02112350",
            "n02106166",
            "n02101556",
            "n02111500",
            "n02106382",
            "n02108422",
            "n02093859",
            "n02098286",
            "n02107574",
            "n02108551",
            "n02088094",
            "n02097047",
            "n02113799",
            "n02093428",
            "n02085936",
            "n02100735",
            "n02099849",
            "n02096051",
            "n02089973",
            "n02101006",
            "n02088632",
            "n02093754",
            "n02095314",
            "n02088466",
            "n02086240",
            "n02110185",
            "n02087046",
            "n02091831",
            "n02105412",
            "n02105641",
            "n02094114",
            "n02107683",
            "n02106550",
            "n02111129",
            "n02113186",
            "n02100583",
            "n02111889",
            "n02108915",
            "n02102973",
            "n02097298",
            "n02104029",
            "n02090622",
            "n02090379",
            "n02096585",
            "n02092002",
            "n02087394",
            "n02092339",
            "n02091467",
            "n02110806",
            "n02096177",
            "n02089867",
            "n02099267",
            "n02093647",
            "n02088364",
            "n02095570",
            "n02085782",
            "n02105056",
            "n02109525",
            "n02115913",
            "n02112706",
            "n02085620",
            "n02095889",
            "n02101388",
            "n02109961",
            "n02086646",
            "n02102177",
            "n02093256",
            "n02111277",
            "n02098413",
            "n02088238",
            "n02108000",
            "n02097474",
            "n02113978",
            "n02086079",
            "n02091032",
            "n02106030",
            "n02093991",
            "n02102040",
            "n02113712",
            "n02090721",
            "n02109047",
            "n02100236",
            "n02102480",
            "n02099429",
            "n02097130",
            "n02108089",
            "n02105505",
            "n02112137",
            "n02094258",
            "n02110627",
            "n02105162",
            "n02113624",
            "n02106662",
            "n02091635",
            "n02086910",
            "n02098105",
            "n02096437",
            "n02091244",
            "n02116738",
            "n02104365",
            "n02107908",
            "n02105855",
            "n02091134",
            "n02100877",
            "n02097209",
            "n02094433",
            "n02107142",
            "n02110958",
            "n02107312",
            "n02105251",
        ],
    ),
    (
        "bird",
        &[
            "n01514668",
            "n02051845",
            "n02018207",
            "n01531178",
            "n01828970",
            "n01514859",
            "n01558993",
            "n02056570",
            "n02018795",
            "n01580077",
            "n01847000",
            "n02013706",
            "n01614925",
            "n02028035",
            "n02037110",
            "n02011460",
            "n01855672",
            "n02058221",
            "n01534433",
            "n01616318",
            "n01855032",
            "n01518878",
            "n01537544",
            "n02002556",
            "n01843383",
            "n01843065",
            "n01622779",
            "n01860187",
            "n01820546",
            "n01530575",
            "n01819313",
            "n01608432",
            "n02033041",
            "n01818515",
            "n02009912",
            "n02002724",
            "n01532829",
            "n01560419",
            "n01601694",
            "n02012849",
            "n01582220",
            "n01824575",
            "n01829413",
            "n02027492",
            "n01592084",
            "n02025239",
            "n02006656",
            "n02007558",
            "n02017213",
            "n01833805",
            "n01817953",
            "n02009229",
        ],
    ),
    (
        "car",
        &[
            "n04467665",
            "n03895866",
            "n04285008",
            "n02704792",
            "n04465501",
            "n03272562",
            "n03384352",
            "n03345487",
            "n02797295",
            "n04252077",
            "n03777568",
            "n03791053",
            "n03478589",
            "n03930630",
            "n03977966",
            "n03444034",
            "n03792782",
            "n04335435",
            "n04204347",
            "n02930766",
            "n03670208",
            "n04252225",
            "n03100240",
            "n03785016",
            "n03417042",
            "n03538406",
            "n04065272",
            "n04310018",
            "n04461696",
            "n04509417",
            "n03770679",
            "n03594945",
            "n04389033",
            "n03868242",
            "n04482393",
            "n04037443",
            "n02814533",
            "n03599486",
            "n03393912",
            "n02701002",
            "n03796401",
            "n02835271",
        ],
    ),
    (
        "butterfly",
        &[
            "n02277742",
            "n02281787",
            "n02279972",
            "n02281406",
            "n02280649",
            "n02276258",
        ],
    ),
    ("aircraft", &["n02690373", "n02692877", "n02782093"]),
];

/// Every synset of `MIXOE_INET_SPLITS`.
pub fn mixoe_excluded() -> Vec<&'static str> {
    MIXOE_INET_SPLITS
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect()
}

/// Read WebVision under `root`, leaving out the concepts (WordNet ids) in `exclude`.
pub fn read(root: &Path, exclude: &[&str], name: &str) -> Result<FileList, DataError> {
    let text = |file: &str| -> Result<(PathBuf, String), DataError> {
        let path = root.join("info").join(file);
        let bytes = read_file(&path, "WebVision info file", LAYOUT, HINT)?;
        Ok((path.clone(), utf8_text(&path, bytes)?))
    };
    // 1-2: concepts by line number, kept in file order.
    let (synsets_path, synsets) = text("synsets.txt")?;
    let excluded: HashSet<&str> = exclude.iter().copied().collect();
    let mut concepts = 0usize;
    let mut kept = Vec::new();
    for (i, line) in synsets.split_inclusive('\n').enumerate() {
        let line = line.trim_end();
        let wnid = line
            .get(..9)
            .filter(|w| w.starts_with('n') && w[1..].bytes().all(|b| b.is_ascii_digit()));
        let Some(wnid) = wnid else {
            return Err(DataError::corrupt(
                &synsets_path,
                format!("line {}", i + 1),
                format!("`{line}` does not start with a WordNet id; expected `n01440764 <name>`"),
            ));
        };
        concepts += 1;
        if !excluded.contains(wnid) {
            kept.push(concepts);
        }
    }
    // 3: queries of each concept, in the map's order.
    let (map_path, map) = text("queries_synsets_map.txt")?;
    let mut queries: HashMap<usize, Vec<u32>> = HashMap::new();
    for (i, line) in map.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        let mut parts = line.split(' ');
        let (q, c) = (parts.next(), parts.next());
        let parsed = q
            .and_then(|q| q.parse::<u32>().ok())
            .zip(c.and_then(|c| c.parse::<usize>().ok()));
        let Some((query, concept)) = parsed else {
            return Err(DataError::corrupt(
                &map_path,
                at(),
                format!("`{line}` is not `<query id> <concept number>`"),
            ));
        };
        if !(1..=concepts).contains(&concept) {
            return Err(DataError::corrupt(
                &map_path,
                at(),
                format!(
                    "concept {concept} is out of range: synsets.txt has {concepts} (1..={concepts})"
                ),
            ));
        }
        queries.entry(concept).or_default().push(query);
    }
    let wanted: HashSet<String> = kept
        .iter()
        .flat_map(|c| queries.get(c).into_iter().flatten())
        .map(|q| format!("q{q:04}"))
        .collect();
    // 4: google then flickr.
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for source in ["google", "flickr"] {
        let dir = root.join(source);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::missing(
                    &dir,
                    "WebVision image folder",
                    LAYOUT,
                    HINT,
                ));
            }
            Err(e) => return Err(DataError::io(&dir, e)),
        };
        let mut folders = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| DataError::io(&dir, e))?;
            let folder = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && wanted.contains(&folder) {
                folders.push(folder);
            }
        }
        folders.sort();
        for (label, folder) in folders.iter().enumerate() {
            let before = files.len();
            image_folder_files(&dir.join(folder), &mut files)?;
            labels.extend(std::iter::repeat_n(label, files.len() - before));
        }
    }
    if files.is_empty() {
        return Err(DataError::corrupt(
            root,
            "folder",
            format!(
                "no images in the query folders of the {} kept concepts; expected google/q####/*.jpg",
                kept.len()
            ),
        ));
    }
    Ok(FileList::from_parts(name, root, files, labels, Vec::new()))
}

/// torchvision `make_dataset` for one class folder: `sorted(os.walk(dir, followlinks=True))`
/// (folders by path string), each folder's files sorted by name.
fn image_folder_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut folders = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < folders.len() {
        let rd = std::fs::read_dir(&folders[i]).map_err(|e| DataError::io(&folders[i], e))?;
        for entry in rd {
            let p = entry.map_err(|e| DataError::io(&folders[i], e))?.path();
            if p.is_dir() {
                folders.push(p);
            }
        }
        i += 1;
    }
    folders.sort_by(|a, b| a.to_string_lossy().cmp(&b.to_string_lossy()));
    for folder in &folders {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .map_err(|e| DataError::io(folder, e))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let lower = n.to_lowercase();
            if IMG_EXTENSIONS.iter().any(|x| lower.ends_with(x)) {
                out.push(folder.join(n));
            }
        }
    }
    Ok(())
}
