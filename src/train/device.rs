//! Compute devices: what `train.device` and `bertlab run --devices` ask for, resolved to a candle
//! [`Device`] and the label that the log and `run.json` record.
//!
//! - `cpu`: the CPU, all cores.
//! - `cuda` / `cuda:N`: GPU 0 / GPU N; only in a build with the `cuda` Cargo feature (elsewhere a
//!   clear error naming the feature).
//! - `auto`: the first GPU when this build has the `cuda` feature and a GPU is present, else the
//!   CPU; the label says which was taken. (A `cuda` build links the driver's libcuda at start-up:
//!   it runs only where an NVIDIA driver is installed, with or without a usable GPU.)
//!
//! The test hook [`FAKE_GPUS_VARIABLE`] (`BERTLAB_FAKE_GPUS=N`) makes a CPU build pretend to have
//! N GPUs that compute on the CPU, so that the multi-GPU scheduler of `bertlab run --devices` is
//! tested without one. Their labels say `fake`, so a run trained on one never passes for a GPU run.

use anyhow::{Context, bail};
use candle_core::Device;

use crate::plan::spec::DeviceRequest;

/// The test hook: `BERTLAB_FAKE_GPUS=N` gives a build without GPUs N fake ones (computing on the
/// CPU), labelled `cuda:i (fake)`.
pub const FAKE_GPUS_VARIABLE: &str = "BERTLAB_FAKE_GPUS";

/// A device ready to compute on, and what to call it.
#[derive(Clone, Debug)]
pub struct ResolvedDevice {
    pub device: Device,
    /// `cpu`, `cuda:0`, or `cuda:1 (fake)`: what the log and `run.json` say.
    pub label: String,
}

/// Whether this binary was built with the `cuda` feature.
pub const fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

fn fake_gpus() -> usize {
    std::env::var(FAKE_GPUS_VARIABLE)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// How many GPUs this process can use (0 in a build without `cuda`, unless faked).
pub fn gpu_count() -> usize {
    let fake = fake_gpus();
    if fake > 0 {
        return fake;
    }
    cuda_gpu_count()
}

#[cfg(feature = "cuda")]
fn cuda_gpu_count() -> usize {
    // Initialises the driver first; no driver (or no GPU) is a count of 0.
    candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
        .map_or(0, |count| count.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
fn cuda_gpu_count() -> usize {
    0
}

/// Memory in use on `device`'s GPU (by every process), in MiB; `None` for the CPU.
pub fn gpu_memory_in_use_mib(device: &Device) -> Option<f64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = device {
        let (free, total) = gpu.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as f64 / (1024.0 * 1024.0));
    }
    let _ = device;
    None
}

fn cpu() -> ResolvedDevice {
    ResolvedDevice {
        device: Device::Cpu,
        label: "cpu".into(),
    }
}

/// The device `request` names, opened.
pub fn resolve(request: DeviceRequest) -> anyhow::Result<ResolvedDevice> {
    match request {
        DeviceRequest::Cpu => Ok(cpu()),
        DeviceRequest::Auto => {
            if gpu_count() > 0 {
                open_gpu(0)
            } else {
                Ok(cpu())
            }
        }
        DeviceRequest::Cuda(index) => open_gpu(index.unwrap_or(0)),
    }
}

fn open_gpu(index: usize) -> anyhow::Result<ResolvedDevice> {
    let fake = fake_gpus();
    if fake > 0 {
        if index >= fake {
            bail!(
                "device cuda:{index} does not exist: {FAKE_GPUS_VARIABLE}={fake} fakes cuda:0 to cuda:{}",
                fake - 1
            );
        }
        return Ok(ResolvedDevice {
            device: Device::Cpu,
            label: format!("cuda:{index} (fake)"),
        });
    }
    if !built_with_cuda() {
        bail!(
            "device cuda:{index} needs a GPU build of bertlab and this binary was built without the `cuda` Cargo feature: build with `cargo build --release --features cuda` (see scripts/cuda-toolkit.sh), or use device = \"cpu\" or \"auto\""
        );
    }
    let count = cuda_gpu_count();
    if index >= count {
        bail!(
            "device cuda:{index} does not exist: this machine has {} (is the NVIDIA driver loaded? nvidia-smi lists the GPUs)",
            match count {
                0 => "no GPU".to_string(),
                1 => "one GPU, cuda:0".to_string(),
                n => format!("{n} GPUs, cuda:0 to cuda:{}", n - 1),
            }
        );
    }
    let device =
        Device::new_cuda(index).with_context(|| format!("cannot open the GPU cuda:{index}"))?;
    Ok(ResolvedDevice {
        device,
        label: format!("cuda:{index}"),
    })
}

/// The devices of `bertlab run --devices`: GPU indices separated by commas (`0,1,2,3`, or
/// `cuda:0,cuda:1`), or `all` for every GPU this process sees. Each index at most once.
pub fn parse_device_list(text: &str) -> anyhow::Result<Vec<DeviceRequest>> {
    let text = text.trim();
    if !built_with_cuda() && fake_gpus() == 0 {
        bail!(
            "--devices needs a GPU build of bertlab and this binary was built without the `cuda` Cargo feature: build with `cargo build --release --features cuda` (see scripts/cuda-toolkit.sh); without --devices a sweep trains one run at a time on the CPU with every core"
        );
    }
    if text == "all" {
        let count = gpu_count();
        if count == 0 {
            bail!(
                "--devices all: this process sees no GPU{}",
                if built_with_cuda() {
                    ""
                } else {
                    " (this binary was built without the `cuda` Cargo feature)"
                }
            );
        }
        return Ok((0..count)
            .map(|index| DeviceRequest::Cuda(Some(index)))
            .collect());
    }
    parse_indices(text)
}

/// `0,1,3` or `cuda:0,cuda:1`: GPU indices, each at most once.
fn parse_indices(text: &str) -> anyhow::Result<Vec<DeviceRequest>> {
    let mut devices = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let index = item
            .strip_prefix("cuda:")
            .unwrap_or(item)
            .parse::<usize>()
            .ok()
            .with_context(|| {
                format!(
                    "--devices: `{item}` is not a GPU index: write indices like `0,1,2,3`, or `all`"
                )
            })?;
        let request = DeviceRequest::Cuda(Some(index));
        if devices.contains(&request) {
            bail!("--devices names GPU {index} twice");
        }
        devices.push(request);
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_are_gpu_indices() {
        assert_eq!(
            parse_indices("0,1, 3").unwrap(),
            vec![
                DeviceRequest::Cuda(Some(0)),
                DeviceRequest::Cuda(Some(1)),
                DeviceRequest::Cuda(Some(3))
            ]
        );
        assert_eq!(
            parse_indices("cuda:2").unwrap(),
            vec![DeviceRequest::Cuda(Some(2))]
        );
        let error = parse_indices("0,0").unwrap_err().to_string();
        assert!(error.contains("GPU 0 twice"), "{error}");
        let error = parse_indices("0,gpu1").unwrap_err().to_string();
        assert!(error.contains("`gpu1` is not a GPU index"), "{error}");
    }

    #[test]
    fn the_cpu_is_always_there() {
        let device = resolve(DeviceRequest::Cpu).unwrap();
        assert!(device.device.is_cpu());
        assert_eq!(device.label, "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_names_the_feature_when_asked_for_a_gpu() {
        if fake_gpus() > 0 {
            return;
        }
        let error = resolve(DeviceRequest::Cuda(Some(1)))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`cuda` Cargo feature"), "{error}");
        let auto = resolve(DeviceRequest::Auto).unwrap();
        assert_eq!(auto.label, "cpu");
    }
}
