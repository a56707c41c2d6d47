//! Weight import: the official checkpoints of `../shared/fixtures/weights` reproduce the official
//! outputs; torchvision / timm / AEM key layouts map onto our modules; mismatches name the keys.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use oodforge_core::config::{Backbone, ModelConfig, ResNetStem};
use oodforge_models::import::load_mil_weights;
use oodforge_models::{
    Abmil, Backbone as Net, Classifier, MhaMil, MilModel, ModelError, load_weights,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn weights_dir() -> PathBuf {
    shared().join("weights")
}

/// `{shape, dtype, data}` of the fixtures' JSON layout.
fn array(v: &Value) -> (Vec<usize>, Vec<f32>) {
    let (shape, data) = oodforge_testutil::array(v);
    (shape, data.iter().map(|&x| x as f32).collect())
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let (shape, data) = array(v);
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|diff| {err})"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} values, max |diff| {worst:e}", got.len());
}

fn expected() -> Value {
    let text = std::fs::read_to_string(weights_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn case<'a>(expected: &'a Value, file: &str) -> &'a Value {
    let c = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["file"] == file)
        .unwrap();
    // The checkpoint is the one the outputs were recorded with.
    let bytes = std::fs::read(weights_dir().join(file)).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, c["sha256"].as_str().unwrap(), "{file} changed");
    c
}

fn classifier(backbone: Backbone, classes: usize, image: usize) -> Classifier {
    Classifier::new(
        &ModelConfig::from(backbone),
        classes,
        image,
        &Device::flex(),
    )
}

#[test]
fn openood_resnet18_32x32_checkpoint_reproduces_logits_and_features() {
    let expected = expected();
    let c = case(&expected, "openood_resnet18_32x32.ckpt");
    let tol = expected["tolerance"]["rtol"].as_f64().unwrap() as f32;
    let device = Device::flex();
    let mut model = classifier(
        Backbone::ResNet18 {
            width: 64,
            stem: ResNetStem::Cifar,
        },
        10,
        32,
    );
    let report = load_weights(
        &mut model,
        &weights_dir().join("openood_resnet18_32x32.ckpt"),
        false,
    )
    .unwrap();
    // 62 parameters + 2 x 20 BatchNorm running statistics; the 20 counters are ignored.
    assert_eq!(report.loaded, 62 + 40);
    assert_eq!(report.ignored.len(), 20);
    assert!(
        report
            .ignored
            .iter()
            .all(|k| k.ends_with("num_batches_tracked"))
    );
    // Inference device (no autodiff): BatchNorm uses the imported running statistics.
    let out = model.forward(tensor::<4>(&c["input"], &device));
    assert_close(
        &values(out.logits),
        &array(&c["logits"]).1,
        tol,
        tol,
        "logits",
    );
    assert_close(
        &values(out.features),
        &array(&c["penultimate_features"]).1,
        tol,
        tol,
        "penultimate features",
    );
}

#[test]
fn oe_wrn_40_2_snapshot_reproduces_logits() {
    let expected = expected();
    let c = case(&expected, "oe_wrn_40_2.pt");
    let tol = expected["tolerance"]["rtol"].as_f64().unwrap() as f32;
    let device = Device::flex();
    let mut model = classifier(
        Backbone::Wrn {
            depth: 40,
            widen_factor: 2,
            dropout: 0.3,
        },
        10,
        32,
    );
    let report = load_weights(&mut model, &weights_dir().join("oe_wrn_40_2.pt"), false).unwrap();
    assert!(report.loaded > 100, "{report:?}");
    let out = model.forward(tensor::<4>(&c["input"], &device));
    assert_close(
        &values(out.logits),
        &array(&c["logits"]).1,
        tol,
        tol,
        "logits",
    );
}

#[test]
fn mismatched_checkpoints_name_missing_unexpected_and_misshaped_keys() {
    let ckpt = weights_dir().join("openood_resnet18_32x32.ckpt");
    // ResNet-34 needs blocks ResNet-18 does not have.
    let mut r34 = classifier(
        Backbone::ResNet34 {
            width: 64,
            stem: ResNetStem::Cifar,
        },
        10,
        32,
    );
    let e = load_weights(&mut r34, &ckpt, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ModelError::Mismatch { .. }), "{msg}");
    assert!(msg.contains("openood_resnet18_32x32.ckpt"), "{msg}");
    assert!(
        msg.contains("missing") && msg.contains("layer1.2.conv1.weight"),
        "{msg}"
    );
    assert!(msg.contains("layer1.2.bn1.running_mean"), "{msg}");
    // 100 classes: the head is mis-shaped, shown in PyTorch's [out, in] layout...
    let mut r18 = classifier(
        Backbone::ResNet18 {
            width: 64,
            stem: ResNetStem::Cifar,
        },
        100,
        32,
    );
    let msg = load_weights(&mut r18, &ckpt, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("fc.weight: checkpoint [10, 512] vs network [100, 512]"),
        "{msg}"
    );
    assert!(msg.contains("reset_head"), "{msg}");
    // ... and `reset_head` keeps our head and loads the rest.
    let before = values(r18.head_weight());
    let report = load_weights(&mut r18, &ckpt, true).unwrap();
    assert!(
        report.ignored.iter().any(|k| k == "fc.weight"),
        "{report:?}"
    );
    assert_eq!(values(r18.head_weight()), before);
    // A WRN snapshot is not a ResNet: its keys are unexpected, under their own names.
    let mut r10 = classifier(
        Backbone::ResNet10 {
            width: 16,
            stem: ResNetStem::Cifar,
        },
        10,
        32,
    );
    let msg = load_weights(&mut r10, &weights_dir().join("oe_wrn_40_2.pt"), false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unexpected") && msg.contains("block1.layer.0.bn1.weight"),
        "{msg}"
    );
    // Not a checkpoint at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"hello world").unwrap();
    let msg = load_weights(&mut r10, &junk, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("junk.pt") && msg.contains("not a PyTorch checkpoint"),
        "{msg}"
    );
}

/// A safetensors file (the format timm and Hugging Face publish) written by hand: header JSON
/// with dtype/shape/offsets, then little-endian f32 data.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let wide: Vec<_> = tensors
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                s.clone(),
                d.iter().map(|&v| f64::from(v)).collect(),
            )
        })
        .collect();
    oodforge_testutil::write_safetensors(path, "F32", &wide);
}

/// Distinct deterministic values per tensor, so a transposition or a swap shows.
fn fill(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((seed * 7919 + i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Every float tensor of a module by path, in burn's layout.
fn params(m: &impl Module) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        out: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            self.out
                .insert(self.path.join("."), (t.dims().to_vec(), values(t)));
        }
    }
    let mut c = Collect {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    m.visit(&mut c);
    c.out
}

/// A PyTorch `[out, in]` matrix as burn's `[in, out]`.
fn transpose(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (o, i) = (shape[0], shape[1]);
    let mut t = vec![0.0; v.len()];
    for r in 0..o {
        for c in 0..i {
            t[c * o + r] = v[r * i + c];
        }
    }
    t
}

/// torchvision `resnet50` state-dict names and shapes (`torchvision/models/resnet.py`), written
/// out from its structure, for base width `w` and `classes` classes.
fn torchvision_resnet50_keys(w: usize, classes: usize) -> Vec<(String, Vec<usize>)> {
    let mut keys = vec![("conv1.weight".to_string(), vec![w, 3, 7, 7])];
    let bn = |keys: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            keys.push((format!("{name}.{p}"), vec![c]));
        }
        keys.push((format!("{name}.num_batches_tracked"), vec![]));
    };
    bn(&mut keys, "bn1", w);
    let mut cin = w;
    for (layer, blocks) in [3, 4, 6, 3].into_iter().enumerate() {
        let planes = w << layer;
        for b in 0..blocks {
            let p = format!("layer{}.{b}", layer + 1);
            keys.push((format!("{p}.conv1.weight"), vec![planes, cin, 1, 1]));
            bn(&mut keys, &format!("{p}.bn1"), planes);
            keys.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
            bn(&mut keys, &format!("{p}.bn2"), planes);
            keys.push((format!("{p}.conv3.weight"), vec![planes * 4, planes, 1, 1]));
            bn(&mut keys, &format!("{p}.bn3"), planes * 4);
            if b == 0 {
                keys.push((
                    format!("{p}.downsample.0.weight"),
                    vec![planes * 4, cin, 1, 1],
                ));
                bn(&mut keys, &format!("{p}.downsample.1"), planes * 4);
            }
            cin = planes * 4;
        }
    }
    keys.push(("fc.weight".into(), vec![classes, cin]));
    keys.push(("fc.bias".into(), vec![classes]));
    keys
}

/// timm `vit_*` state-dict names (`timm/models/vision_transformer.py`, `global_pool="token"`).
fn timm_vit_keys(
    dim: usize,
    depth: usize,
    mlp: usize,
    patch: usize,
    tokens: usize,
    classes: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut keys = vec![
        ("cls_token".to_string(), vec![1, 1, dim]),
        ("pos_embed".into(), vec![1, tokens, dim]),
        ("patch_embed.proj.weight".into(), vec![dim, 3, patch, patch]),
        ("patch_embed.proj.bias".into(), vec![dim]),
    ];
    for i in 0..depth {
        for (name, shape) in [
            ("norm1.weight", vec![dim]),
            ("norm1.bias", vec![dim]),
            ("attn.qkv.weight", vec![3 * dim, dim]),
            ("attn.qkv.bias", vec![3 * dim]),
            ("attn.proj.weight", vec![dim, dim]),
            ("attn.proj.bias", vec![dim]),
            ("norm2.weight", vec![dim]),
            ("norm2.bias", vec![dim]),
            ("mlp.fc1.weight", vec![mlp, dim]),
            ("mlp.fc1.bias", vec![mlp]),
            ("mlp.fc2.weight", vec![dim, mlp]),
            ("mlp.fc2.bias", vec![dim]),
        ] {
            keys.push((format!("blocks.{i}.{name}"), shape));
        }
    }
    keys.push(("norm.weight".into(), vec![dim]));
    keys.push(("norm.bias".into(), vec![dim]));
    keys.push(("head.weight".into(), vec![classes, dim]));
    keys.push(("head.bias".into(), vec![classes]));
    keys
}

/// Write `keys` with distinct values, load them, and check every value landed where the
/// PyTorch name says (Linear weights transposed, norm weight/bias as gamma/beta).
fn round_trip(
    model: &mut Classifier,
    keys: &[(String, Vec<usize>)],
    ours: impl Fn(&str) -> String,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weights.safetensors");
    let tensors: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, (k, s))| (k.clone(), s.clone(), fill(i, s.iter().product())))
        .collect();
    write_safetensors(&file, &tensors);
    let report = load_weights(model, &file, false).unwrap();
    let counters = keys
        .iter()
        .filter(|(k, _)| k.ends_with("num_batches_tracked"))
        .count();
    assert_eq!(report.loaded, keys.len() - counters);
    let have = match model.backbone() {
        Net::ResNet(m) => params(m),
        Net::Wrn(m) => params(m),
        Net::Vit(m) => params(m),
    };
    for (k, shape, v) in &tensors {
        if k.ends_with("num_batches_tracked") {
            continue;
        }
        let path = ours(k);
        let (got_shape, got) = have
            .get(&path)
            .unwrap_or_else(|| panic!("{k} -> {path} not in the model"));
        let linear = shape.len() == 2 && k.ends_with("weight");
        let want = if linear {
            transpose(shape, v)
        } else {
            v.clone()
        };
        assert_eq!(got, &want, "{k} -> {path} (shape {got_shape:?})");
    }
}

#[test]
fn torchvision_resnet50_layout_loads_every_tensor_where_it_belongs() {
    let mut model = classifier(
        Backbone::ResNet50 {
            width: 4,
            stem: ResNetStem::ImageNet,
        },
        7,
        64,
    );
    round_trip(&mut model, &torchvision_resnet50_keys(4, 7), |k| {
        let mut s = k.to_string();
        for l in 1..=4 {
            if let Some(rest) = s.strip_prefix(&format!("layer{l}.")) {
                s = format!("stages.{}.{rest}", l - 1);
            }
        }
        s.replace("downsample.0", "shortcut.conv")
            .replace("downsample.1", "shortcut.bn")
            .replace("bn1.weight", "bn1.gamma")
            .replace("bn2.weight", "bn2.gamma")
            .replace("bn3.weight", "bn3.gamma")
            .replace("bn.weight", "bn.gamma")
            .replace("bn1.bias", "bn1.beta")
            .replace("bn2.bias", "bn2.beta")
            .replace("bn3.bias", "bn3.beta")
            .replace("bn.bias", "bn.beta")
    });
}

#[test]
fn timm_vit_safetensors_load_every_tensor_where_it_belongs() {
    let backbone = Backbone::Vit {
        patch_size: 8,
        dim: 12,
        depth: 2,
        heads: 3,
        mlp_dim: Some(20),
    };
    let mut model = classifier(backbone, 5, 32);
    round_trip(&mut model, &timm_vit_keys(12, 2, 20, 8, 17, 5), |k| {
        k.replace("norm1.weight", "norm1.gamma")
            .replace("norm2.weight", "norm2.gamma")
            .replace("norm.weight", "norm.gamma")
            .replace("norm1.bias", "norm1.beta")
            .replace("norm2.bias", "norm2.beta")
            .replace("norm.bias", "norm.beta")
    });
}

/// AEM's ABMIL on the golden fixture's parameters (official names, written as safetensors and
/// imported): pre-softmax attention, pooled feature and bag logits as the official model.
#[test]
fn aem_abmil_reproduces_the_official_forward_pass() {
    let text = std::fs::read_to_string(shared().join("golden/05_aem_abmil.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let device = Device::flex();
    for c in golden["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let h = &c["hyperparameters"];
        let dim = |k: &str| h[k].as_u64().unwrap() as usize;
        let mut model = MilModel::Abmil(Abmil::new(
            dim("D_feat"),
            dim("D_inner"),
            dim("D_attn"),
            dim("n_class"),
            &device,
        ));
        let tensors = oodforge_testutil::named_arrays(&c["inputs"]["params"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abmil.safetensors");
        oodforge_testutil::write_safetensors(&file, "F32", &tensors);
        let report = load_mil_weights(&mut model, &file).unwrap();
        assert_eq!(report.loaded, tensors.len(), "{name}");
        let bag: Tensor<3> = tensor(&c["inputs"]["bag"], &device);
        let [_, n, d] = bag.dims();
        let out = model.forward(bag.reshape([n, d]));
        let o = &c["outputs"];
        let tol = 1e-5;
        assert_close(
            &values(out.attention),
            &array(&o["attn_logits"]).1,
            tol,
            tol,
            name,
        );
        assert_close(&values(out.features), &array(&o["afeat"]).1, tol, tol, name);
        assert_close(
            &values(out.logits),
            &array(&o["bag_logit"]).1,
            tol,
            tol,
            name,
        );
    }
    // The multi-head aggregator takes AEM's `--arch mha` names as they are.
    let mut mha = MilModel::Mha(MhaMil::new(16, 16, 2, &device));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mha.safetensors");
    let mut tensors = vec![
        ("dimreduction.fc1.weight".to_string(), vec![16, 16]),
        ("q".into(), vec![1, 1, 16]),
        ("classifier.fc.weight".into(), vec![2, 16]),
        ("classifier.fc.bias".into(), vec![2]),
        ("attention.layer_norm.weight".into(), vec![16]),
        ("attention.layer_norm.bias".into(), vec![16]),
    ];
    for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        tensors.push((format!("attention.{p}.weight"), vec![16, 16]));
        tensors.push((format!("attention.{p}.bias"), vec![16]));
    }
    let tensors: Vec<_> = tensors
        .into_iter()
        .enumerate()
        .map(|(i, (k, s))| {
            let n = s.iter().product();
            (k, s, fill(i, n))
        })
        .collect();
    write_safetensors(&file, &tensors);
    assert_eq!(load_mil_weights(&mut mha, &file).unwrap().loaded, 14);
}

/// A pickle that would run a shell command in Python (`os.system` through REDUCE) in both the
/// legacy and the zip layout of `torch.save`: loading it is an error naming the file, and
/// nothing runs (the command would create a marker file).
#[test]
fn code_running_pickles_are_refused_without_running() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("pwned");
    let command = format!("touch {}", marker.display());
    // Protocol 2: GLOBAL os.system, the command as its one argument, REDUCE, STOP.
    let mut pickle = b"\x80\x02cos\nsystem\n".to_vec();
    pickle.push(b'X');
    pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"\x85R.");
    let legacy = tmp.path().join("evil_legacy.pt");
    std::fs::write(&legacy, &pickle).unwrap();
    // The same call as the value of a state-dict entry: EMPTY_DICT, key, the call, SETITEM.
    let key = b"conv1.weight";
    let mut nested = b"\x80\x02}X".to_vec();
    nested.extend_from_slice(&(key.len() as u32).to_le_bytes());
    nested.extend_from_slice(key);
    nested.extend_from_slice(&pickle[2..pickle.len() - 1]);
    nested.extend_from_slice(b"s.");
    let in_dict = tmp.path().join("evil_in_dict.pt");
    std::fs::write(&in_dict, &nested).unwrap();
    // torch.save's zip layout: <name>/data.pkl (stored, not compressed) and a version record.
    let zipped = tmp.path().join("evil_zip.pt");
    write_stored_zip(
        &zipped,
        &[("evil_zip/data.pkl", &pickle), ("evil_zip/version", b"3\n")],
    );
    for path in [&legacy, &in_dict, &zipped] {
        let mut net = classifier(
            Backbone::ResNet18 {
                width: 8,
                stem: ResNetStem::Cifar,
            },
            10,
            32,
        );
        let result = load_weights(&mut net, path, false);
        let name = path.file_name().unwrap().to_str().unwrap();
        match result {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(name), "{msg}");
                // At the root the call is refused by name; inside a dict it is not a tensor, so
                // the state dict lacks every weight.
                if path == &in_dict {
                    assert!(matches!(e, ModelError::Mismatch { .. }), "{msg}");
                    assert!(msg.contains("missing"), "{msg}");
                } else {
                    assert!(msg.contains("found os.system"), "{msg}");
                }
            }
            Ok(report) => panic!("{name} loaded: {report:?}"),
        }
        assert!(!marker.exists(), "{name}: the pickle's command ran");
    }
}

/// A zip archive of stored (uncompressed) entries, as `torch.save` writes.
fn write_stored_zip(path: &Path, entries: &[(&str, &[u8])]) {
    // CRC-32 (IEEE 802.3, reflected), bit by bit: zip's checksum.
    let crc = |data: &[u8]| {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, method (stored), time, date
            h.extend_from_slice(&crc(data).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend(header(0x0201_4b50, true));
    }
    let start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, out).unwrap();
}
