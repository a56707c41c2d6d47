//! Backend selection: `auto | wgpu | flex | ndarray | cuda | tch`.
//!
//! `auto` picks wgpu only for a hardware adapter. wgpu's own automatic choice accepts software
//! adapters (Mesa lavapipe through Vulkan, llvmpipe through GL), which run compute shaders on
//! the CPU far slower than flex does, so a CPU-type adapter counts as "no GPU" here.

use crate::config::BackendChoice;
use burn::tensor::Device;
use std::sync::OnceLock;

/// What a run ended up on; printed at start and written to the manifest.
#[derive(Debug, Clone)]
pub struct SelectedBackend {
    pub device: Device,
    /// `flex`, `wgpu`, `ndarray`, `cuda` or `tch`.
    pub name: &'static str,
    /// Adapter / device description, e.g. `NVIDIA H100 (Vulkan, DiscreteGpu)` or `CPU (flex)`.
    pub adapter: String,
    /// Why `auto` chose what it chose (empty for an explicit choice).
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "backend `wgpu` was requested but no wgpu adapter was found{detail}\n  hint: install a GPU driver (or Mesa's software Vulkan driver: `apt-get install mesa-vulkan-drivers`), or use `--backend flex` to train on the CPU"
    )]
    NoAdapter { detail: String },
    #[error(
        "backend `wgpu` could not be initialised on adapter {adapter}: {message}\n  hint: use `--backend flex` to train on the CPU"
    )]
    WgpuInit { adapter: String, message: String },
    #[error(
        "backend `{0}` is not compiled into this build\n  hint: rebuild with `cargo build --release -p oodforge-cli --features {0}`, or use `--backend auto`"
    )]
    NotCompiled(&'static str),
    #[error(
        "backend `cuda` was requested but no CUDA device was found\n  hint: check `nvidia-smi`, or use `--backend auto`"
    )]
    NoCuda,
    #[error(
        "devices: backend `{backend}` has no device {index}; it has {count} ({listed})\n  hint: list indices below {count}, or use devices = \"all\""
    )]
    NoSuchDevice {
        backend: &'static str,
        index: usize,
        count: usize,
        listed: String,
    },
    #[error(
        "devices: data-parallel training on wgpu runs on discrete GPUs, and this machine has none (adapters: {0})\n  hint: use devices = [0]"
    )]
    NoDiscreteGpus(String),
}

/// One wgpu adapter as the driver describes it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub api: String,
    pub device_type: String,
    pub is_cpu: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.api, self.device_type)
    }
}

/// Every wgpu adapter on this machine, over every graphics API. Cached: probing opens drivers.
pub fn wgpu_adapters() -> &'static [AdapterSummary] {
    static ADAPTERS: OnceLock<Vec<AdapterSummary>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        use burn::tensor::wgpu::wgpu;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::all(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| {
                let info = a.get_info();
                AdapterSummary {
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    device_type: format!("{:?}", info.device_type),
                    is_cpu: info.device_type == wgpu::DeviceType::Cpu,
                }
            })
            .collect()
    })
}

/// Resolve a backend choice to a device. Never panics for a missing adapter or feature.
pub fn select(choice: BackendChoice) -> Result<SelectedBackend, BackendError> {
    match choice {
        BackendChoice::Flex => Ok(flex(String::new())),
        BackendChoice::Auto => {
            let adapters = wgpu_adapters();
            match adapters.iter().find(|a| !a.is_cpu) {
                Some(gpu) => {
                    let reason = format!("hardware GPU adapter found: {gpu}");
                    let mut selected = wgpu(false)?;
                    selected.reason = reason;
                    Ok(selected)
                }
                None => {
                    let reason = if adapters.is_empty() {
                        "no wgpu adapter found".to_owned()
                    } else {
                        let names: Vec<String> = adapters.iter().map(|a| a.to_string()).collect();
                        format!(
                            "only software (CPU) wgpu adapters found: {}",
                            names.join("; ")
                        )
                    };
                    Ok(flex(reason))
                }
            }
        }
        BackendChoice::Wgpu => {
            let adapters = wgpu_adapters();
            if adapters.is_empty() {
                return Err(BackendError::NoAdapter {
                    detail: String::new(),
                });
            }
            // Explicit wgpu accepts a software adapter: that is how the wgpu path is tested on
            // machines without a GPU.
            wgpu(!adapters.iter().any(|a| !a.is_cpu))
        }
        BackendChoice::Ndarray => ndarray(),
        BackendChoice::Cuda => cuda(),
        BackendChoice::Tch => tch(),
    }
}

fn flex(reason: String) -> SelectedBackend {
    SelectedBackend {
        device: Device::flex(),
        name: "flex",
        adapter: format!("CPU (flex, {} threads)", rayon_threads()),
        reason,
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn wgpu(software: bool) -> Result<SelectedBackend, BackendError> {
    // A wgpu runtime can be initialised once per process; later selections reuse it.
    static DEVICE: OnceLock<Result<(Device, String), String>> = OnceLock::new();
    let adapters = wgpu_adapters();
    let chosen = if software {
        adapters.iter().find(|a| a.is_cpu)
    } else {
        adapters.iter().find(|a| !a.is_cpu)
    }
    .map(|a| a.to_string())
    .unwrap_or_else(|| "unknown".into());
    let result = DEVICE.get_or_init(|| {
        use burn::tensor::DeviceKind;
        if software {
            software_autotune();
        }
        let kind = if software {
            DeviceKind::Cpu
        } else {
            DeviceKind::DefaultDevice
        };
        Device::wgpu_options()
            .device_kind(kind)
            .init()
            .map(|device| {
                let name = device
                    .identity()
                    .map(|id| id.name)
                    .unwrap_or_else(|| chosen.clone());
                (device, name)
            })
            .map_err(|e| e.to_string())
    });
    match result {
        Ok((device, name)) => Ok(SelectedBackend {
            device: device.clone(),
            name: "wgpu",
            adapter: if software {
                format!("{name} (software, CPU)")
            } else {
                name.clone()
            },
            reason: String::new(),
        }),
        Err(message) => Err(BackendError::WgpuInit {
            adapter: chosen,
            message: message.clone(),
        }),
    }
}

/// The devices of a data-parallel run (`devices` of the config), main device first. One
/// device (`[0]`, the default) is `selected.device` itself. With more than one, `selected`
/// is updated to name the main device and the count:
/// - `cuda`: CUDA devices by index (`Device::cuda`);
/// - `wgpu`: hardware discrete GPUs by index among the discrete GPUs (`DeviceKind::DiscreteGpu`);
/// - CPU backends (`flex`, `ndarray`, `tch`): the processor is one device, so every index
///   names it and N indices mean N replicas on the CPU. That gives exactly what N GPUs would
///   compute, which is how data-parallel training is tested without GPUs, but no speed-up;
///   `"all"` means the one CPU device.
pub fn data_parallel(
    selected: &mut SelectedBackend,
    wanted: &crate::config::Devices,
) -> Result<Vec<Device>, BackendError> {
    use crate::config::Devices;
    if wanted.is_single() {
        return Ok(vec![selected.device.clone()]);
    }
    let devices = match selected.name {
        "cuda" => pick(selected.name, wanted, cuda_devices())?,
        "wgpu" => {
            use burn::tensor::DeviceKind;
            let hardware: Vec<&AdapterSummary> = wgpu_adapters()
                .iter()
                .filter(|a| a.device_type == "DiscreteGpu")
                .collect();
            if hardware.is_empty() {
                let names: Vec<String> = wgpu_adapters().iter().map(|a| a.to_string()).collect();
                return Err(BackendError::NoDiscreteGpus(names.join("; ")));
            }
            // Adapters are listed once per graphics API; burn indexes the discrete GPUs of
            // the API it picks, so the count is that of the first API listed.
            let api = &hardware[0].api;
            let count = hardware.iter().filter(|a| &a.api == api).count();
            let all = (0..count)
                .map(|i| Device::wgpu(DeviceKind::DiscreteGpu(i)))
                .collect();
            pick(selected.name, wanted, all)?
        }
        _ => match wanted {
            Devices::All => vec![selected.device.clone()],
            Devices::List(list) => vec![selected.device.clone(); list.len()],
        },
    };
    selected.device = devices[0].clone();
    selected.adapter = format!(
        "{}; data-parallel over {} device(s): {}",
        selected.adapter,
        devices.len(),
        match wanted {
            Devices::All => "all".to_owned(),
            Devices::List(list) => format!("{list:?}"),
        }
    );
    Ok(devices)
}

/// The devices `wanted` names among `all`, in the order given.
fn pick(
    backend: &'static str,
    wanted: &crate::config::Devices,
    all: Vec<Device>,
) -> Result<Vec<Device>, BackendError> {
    use crate::config::Devices;
    match wanted {
        Devices::All if all.is_empty() => Err(BackendError::NoSuchDevice {
            backend,
            index: 0,
            count: 0,
            listed: "none found".into(),
        }),
        Devices::All => Ok(all),
        Devices::List(list) => list
            .iter()
            .map(|&i| {
                all.get(i)
                    .cloned()
                    .ok_or_else(|| BackendError::NoSuchDevice {
                        backend,
                        index: i,
                        count: all.len(),
                        listed: format!("indices 0..{}", all.len()),
                    })
            })
            .collect(),
    }
}

/// Autotune on a software adapter: `minimal`.
///
/// CubeCL autotunes every kernel on first use ("balanced" by default) and keeps the winners in
/// its persistent cache (`target/environment/` of the checkout, or the user cache directory
/// outside one). On a hardware GPU that is what makes it fast, so we leave the level to
/// `burn.toml` / `cubecl.toml`. On a software adapter (lavapipe, llvmpipe) the candidates run
/// on the CPU and tuning takes minutes per kernel shape for no gain, so the level becomes
/// `minimal` there, unless `CUBECL_AUTOTUNE_LEVEL` names one. CubeCL reads its configuration
/// once per process: this runs before the wgpu device is created.
fn software_autotune() {
    use cubecl_runtime::config::autotune::AutotuneLevel;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_some() {
        return;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.autotune.level = AutotuneLevel::Minimal;
    // Already read (another runtime came up first in this process): keep what it read.
    let _ = CubeClRuntimeConfig::try_set(config);
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // kept on purpose: ndarray stays selectable for comparison runs
fn ndarray() -> Result<SelectedBackend, BackendError> {
    Ok(SelectedBackend {
        device: Device::ndarray(),
        name: "ndarray",
        adapter: "CPU (ndarray, deprecated upstream)".into(),
        reason: String::new(),
    })
}

#[cfg(not(feature = "ndarray"))]
fn ndarray() -> Result<SelectedBackend, BackendError> {
    Err(BackendError::NotCompiled("ndarray"))
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<SelectedBackend, BackendError> {
    // Creating the CUDA device does not touch the driver; the first tensor does. Check for a
    // device first so a machine without one gets an error, not a panic.
    let devices = Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec();
    let device = devices.into_iter().next().ok_or(BackendError::NoCuda)?;
    let adapter = device
        .identity()
        .map(|id| id.name)
        .unwrap_or_else(|| "CUDA device 0".into());
    Ok(SelectedBackend {
        device,
        name: "cuda",
        adapter,
        reason: String::new(),
    })
}

#[cfg(feature = "cuda")]
fn cuda_devices() -> Vec<Device> {
    Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec()
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices() -> Vec<Device> {
    Vec::new()
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<SelectedBackend, BackendError> {
    Err(BackendError::NotCompiled("cuda"))
}

/// LibTorch on the CPU: the kernels PyTorch itself runs (oneDNN convolutions, MKL/OpenBLAS
/// gemm, OpenMP threads), for users who want PyTorch's CPU speed inside oodforge. The libtorch
/// is the one of the PyTorch installation the build was pointed at (see the README).
/// burn-tch is deprecated upstream; it stays here because it is the one way to train at
/// PyTorch's CPU speed with burn 0.22 (BENCHMARKS.md).
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch() -> Result<SelectedBackend, BackendError> {
    Ok(SelectedBackend {
        device: Device::libtorch(),
        name: "tch",
        adapter: "CPU (libtorch)".into(),
        reason: String::new(),
    })
}

#[cfg(not(feature = "tch"))]
fn tch() -> Result<SelectedBackend, BackendError> {
    Err(BackendError::NotCompiled("tch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_available() {
        let b = select(BackendChoice::Flex).unwrap();
        assert_eq!(b.name, "flex");
        assert!(b.adapter.contains("flex"));
    }

    #[test]
    fn auto_never_picks_a_software_adapter() {
        let b = select(BackendChoice::Auto).unwrap();
        let has_gpu = wgpu_adapters().iter().any(|a| !a.is_cpu);
        assert_eq!(b.name, if has_gpu { "wgpu" } else { "flex" }, "{b:?}");
        assert!(!b.reason.is_empty(), "auto says why");
        if !has_gpu && wgpu_adapters().iter().any(|a| a.is_cpu) {
            assert!(b.reason.contains("software"), "{}", b.reason);
        }
    }

    /// A 2x2 matmul on the selected device: the smallest proof that a backend computes.
    fn matmul_on(device: &Device) -> Vec<f32> {
        use burn::tensor::{Tensor, TensorData};
        let t =
            Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), device);
        t.clone().matmul(t).into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn flex_computes() {
        assert_eq!(
            matmul_on(&select(BackendChoice::Flex).unwrap().device),
            vec![7.0, 10.0, 15.0, 22.0]
        );
    }

    /// On a machine whose only adapters are software ones (CI's lavapipe), explicit wgpu works
    /// and autotunes at the `minimal` level; `burn.toml` leaves the level to CubeCL's default
    /// for hardware GPUs.
    #[test]
    fn software_wgpu_autotunes_minimally() {
        use cubecl_runtime::config::autotune::AutotuneLevel;
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
        let adapters = wgpu_adapters();
        if adapters.is_empty() || adapters.iter().any(|a| !a.is_cpu) {
            eprintln!("SKIPPED software_wgpu_autotunes_minimally: no software-only wgpu adapters");
            return;
        }
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_some() {
            eprintln!("SKIPPED software_wgpu_autotunes_minimally: CUBECL_AUTOTUNE_LEVEL is set");
            return;
        }
        let b = select(BackendChoice::Wgpu).unwrap();
        assert!(b.adapter.contains("software"), "{}", b.adapter);
        let level = CubeClRuntimeConfig::get().autotune.level.clone();
        assert!(matches!(level, AutotuneLevel::Minimal), "{level:?}");
        assert_eq!(matmul_on(&b.device), vec![7.0, 10.0, 15.0, 22.0]);
    }

    /// The repository's `burn.toml` is what CubeCL itself reads (a file it cannot parse is
    /// ignored with only a warning): balanced autotune with the persistent cache in `target/`.
    #[test]
    fn burn_toml_is_read_by_cubecl() {
        use cubecl_runtime::config::autotune::AutotuneLevel;
        use cubecl_runtime::config::cache::CacheConfig;
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../burn.toml");
        let config = CubeClRuntimeConfig::from_section_file_path(&path, "cubecl")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(matches!(config.autotune.level, AutotuneLevel::Balanced));
        assert!(!config.autotune.disable_cache);
        assert!(matches!(config.environment.path, CacheConfig::Target));
    }

    /// On the CPU every index names the one processor: N indices are N replicas on it, "all"
    /// is one device, and the default leaves the selection as it was.
    #[test]
    fn data_parallel_devices_on_the_cpu() {
        use crate::config::Devices;
        let mut b = select(BackendChoice::Flex).unwrap();
        let one = data_parallel(&mut b, &Devices::default()).unwrap();
        assert_eq!(one.len(), 1);
        assert!(!b.adapter.contains("data-parallel"), "{}", b.adapter);
        let three = data_parallel(&mut b, &Devices::List(vec![0, 1, 2])).unwrap();
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|d| *d == Device::flex()));
        assert!(b.adapter.contains("data-parallel over 3"), "{}", b.adapter);
        let mut b = select(BackendChoice::Flex).unwrap();
        assert_eq!(data_parallel(&mut b, &Devices::All).unwrap().len(), 1);
    }

    /// wgpu data parallelism needs discrete GPUs; a software adapter (CI's lavapipe) is an
    /// error naming the adapters, not N replicas on the CPU through Vulkan.
    #[test]
    fn data_parallel_on_software_wgpu_is_an_error() {
        use crate::config::Devices;
        let adapters = wgpu_adapters();
        if adapters.is_empty() || adapters.iter().any(|a| !a.is_cpu) {
            eprintln!(
                "SKIPPED data_parallel_on_software_wgpu_is_an_error: no software-only wgpu adapters"
            );
            return;
        }
        let mut b = select(BackendChoice::Wgpu).unwrap();
        let e = data_parallel(&mut b, &Devices::List(vec![0, 1]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("discrete GPUs") && e.contains(&adapters[0].name),
            "{e}"
        );
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn ndarray_backend_smoke() {
        let b = select(BackendChoice::Ndarray).unwrap();
        assert_eq!(b.name, "ndarray");
        assert_eq!(matmul_on(&b.device), vec![7.0, 10.0, 15.0, 22.0]);
    }

    /// Without a CUDA device, selecting cuda is an error, never a panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_backend_smoke() {
        match select(BackendChoice::Cuda) {
            Ok(b) => assert_eq!(matmul_on(&b.device), vec![7.0, 10.0, 15.0, 22.0]),
            Err(BackendError::NoCuda) => eprintln!("SKIPPED cuda_backend_smoke: no CUDA device"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[cfg(feature = "tch")]
    #[test]
    fn tch_backend_smoke() {
        let b = select(BackendChoice::Tch).unwrap();
        assert_eq!(b.name, "tch");
        assert_eq!(matmul_on(&b.device), vec![7.0, 10.0, 15.0, 22.0]);
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn missing_tch_is_an_error_with_a_hint() {
        let e = select(BackendChoice::Tch).unwrap_err().to_string();
        assert!(e.contains("--features tch"), "{e}");
    }

    #[cfg(not(feature = "ndarray"))]
    #[test]
    fn missing_feature_is_an_error_with_a_hint() {
        let e = select(BackendChoice::Ndarray).unwrap_err().to_string();
        assert!(e.contains("--features ndarray"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_cuda_is_an_error_with_a_hint() {
        let e = select(BackendChoice::Cuda).unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
