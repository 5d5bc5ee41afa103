//! GPU figures from NVML behind a trait, with a configurable fake for tests.
//!
//! [`Gpus`] is what the servers hold. [`Nvml`] is the real thing: NVML is initialised once
//! per process; when `libnvidia-ml` is absent (no driver, a CPU-only machine) every call
//! answers [`Error::GpuUnavailable`] with a suggestion, never a panic. [`FakeGpus`] serves
//! configurable devices so placement, memory checks and stats are tested without a GPU.
//!
//! A figure NVML cannot give (not supported on this board, no permission) is `None`, never
//! an invented zero.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything we read about one GPU at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSnapshot {
    /// NVML index (what `CUDA_VISIBLE_DEVICES` takes, with the default device order).
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory_total_mb: Option<u64>,
    pub memory_used_mb: Option<u64>,
    pub memory_free_mb: Option<u64>,
    /// Memory the driver reserves and no process can use.
    pub memory_reserved_mb: Option<u64>,
    /// Fraction (0..1) of the last sample period a kernel was running.
    pub utilization_gpu: Option<f64>,
    /// Fraction (0..1) of the last sample period device memory was read or written.
    pub utilization_memory: Option<f64>,
    pub temperature_c: Option<u32>,
    /// Temperature at which the GPU starts to slow itself down.
    pub temperature_slowdown_c: Option<u32>,
    /// Temperature at which the GPU shuts down.
    pub temperature_shutdown_c: Option<u32>,
    /// Maximum operating temperature (NVML's `GpuMax` threshold).
    pub temperature_max_c: Option<u32>,
    pub power_w: Option<f64>,
    /// The power limit in force.
    pub power_limit_w: Option<f64>,
    pub clock_sm_mhz: Option<u32>,
    pub clock_sm_max_mhz: Option<u32>,
    pub clock_memory_mhz: Option<u32>,
    pub clock_memory_max_mhz: Option<u32>,
    /// Why clocks are held down right now (`sw_power_cap`, `hw_slowdown`, ...).
    pub throttle_reasons: Option<Vec<String>>,
    pub ecc_corrected: Option<u64>,
    pub ecc_uncorrected: Option<u64>,
    /// Compute processes using this GPU.
    pub processes: Option<Vec<GpuProcess>>,
}

/// A process holding memory on a GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_mb: Option<u64>,
}

/// A source of GPU figures. Object-safe so servers hold `Arc<dyn GpuSource>`.
/// MiB of GPU memory NVML attributes to `pids`, summed over every GPU; `None` when it
/// lists none of them (no NVML process list, or the processes hold no GPU memory).
pub fn memory_used_by(gpus: &[GpuSnapshot], pids: &[u32]) -> Option<u64> {
    let used: Vec<u64> = gpus
        .iter()
        .flat_map(|g| g.processes.iter().flatten())
        .filter(|p| pids.contains(&p.pid))
        .filter_map(|p| p.used_mb)
        .collect();
    (!used.is_empty()).then(|| used.iter().sum())
}

pub trait GpuSource: Send + Sync + std::fmt::Debug {
    /// Number of visible GPUs.
    fn count(&self) -> Result<u32>;
    /// One GPU's figures.
    fn snapshot(&self, index: u32) -> Result<GpuSnapshot>;
    /// The driver version, for health answers.
    fn driver_version(&self) -> Result<String>;

    /// Every GPU's figures.
    fn snapshots(&self) -> Result<Vec<GpuSnapshot>> {
        (0..self.count()?).map(|i| self.snapshot(i)).collect()
    }
}

/// The GPU source a server holds.
pub type Gpus = Arc<dyn GpuSource>;

/// The real NVML, loaded on first use and kept for the process's life.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nvml;

static NVML: OnceLock<std::result::Result<nvml_wrapper::Nvml, String>> = OnceLock::new();

impl Nvml {
    fn get() -> Result<&'static nvml_wrapper::Nvml> {
        NVML.get_or_init(|| nvml_wrapper::Nvml::init().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::GpuUnavailable(format!("NVML could not be loaded ({e})")))
    }

    /// True when NVML loaded (a driver and at least the library are present).
    pub fn available() -> bool {
        Nvml::get().is_ok()
    }
}

fn nvml_err(e: nvml_wrapper::error::NvmlError) -> Error {
    Error::GpuUnavailable(format!("NVML call failed: {e}"))
}

impl GpuSource for Nvml {
    fn count(&self) -> Result<u32> {
        Nvml::get()?.device_count().map_err(nvml_err)
    }

    fn driver_version(&self) -> Result<String> {
        Nvml::get()?.sys_driver_version().map_err(nvml_err)
    }

    fn snapshot(&self, index: u32) -> Result<GpuSnapshot> {
        use nvml_wrapper::enum_wrappers::device::{
            Clock, EccCounter, MemoryError, TemperatureSensor, TemperatureThreshold,
        };
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let nvml = Nvml::get()?;
        let count = nvml.device_count().map_err(nvml_err)?;
        if index >= count {
            return Err(Error::invalid(
                "gpu_ids",
                format!("GPU {index} does not exist: {count} visible (ids 0..{count})"),
            ));
        }
        let d = nvml.device_by_index(index).map_err(nvml_err)?;
        const MIB: u64 = 1024 * 1024;
        let mem = d.memory_info().ok();
        let util = d.utilization_rates().ok();
        let temp = |t| d.temperature_threshold(t).ok();
        Ok(GpuSnapshot {
            index,
            name: d.name().ok(),
            uuid: d.uuid().ok(),
            memory_total_mb: mem.as_ref().map(|m| m.total / MIB),
            memory_used_mb: mem.as_ref().map(|m| m.used / MIB),
            memory_free_mb: mem.as_ref().map(|m| m.free / MIB),
            memory_reserved_mb: mem.as_ref().map(|m| m.reserved / MIB),
            utilization_gpu: util.as_ref().map(|u| f64::from(u.gpu) / 100.0),
            utilization_memory: util.as_ref().map(|u| f64::from(u.memory) / 100.0),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
            temperature_slowdown_c: temp(TemperatureThreshold::Slowdown),
            temperature_shutdown_c: temp(TemperatureThreshold::Shutdown),
            temperature_max_c: temp(TemperatureThreshold::GpuMax),
            power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            power_limit_w: d
                .enforced_power_limit()
                .ok()
                .map(|mw| f64::from(mw) / 1000.0),
            clock_sm_mhz: d.clock_info(Clock::SM).ok(),
            clock_sm_max_mhz: d.max_clock_info(Clock::SM).ok(),
            clock_memory_mhz: d.clock_info(Clock::Memory).ok(),
            clock_memory_max_mhz: d.max_clock_info(Clock::Memory).ok(),
            throttle_reasons: d.current_throttle_reasons().ok().map(throttle_names),
            ecc_corrected: d
                .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
                .ok(),
            ecc_uncorrected: d
                .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                .ok(),
            processes: d.running_compute_processes().ok().map(|ps| {
                ps.into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_mb: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b / MIB),
                            UsedGpuMemory::Unavailable => None,
                        },
                    })
                    .collect()
            }),
        })
    }
}

fn throttle_names(r: nvml_wrapper::bitmasks::device::ThrottleReasons) -> Vec<String> {
    use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
    [
        (T::GPU_IDLE, "gpu_idle"),
        (
            T::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks_setting",
        ),
        (T::SW_POWER_CAP, "sw_power_cap"),
        (T::HW_SLOWDOWN, "hw_slowdown"),
        (T::SYNC_BOOST, "sync_boost"),
        (T::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    ]
    .into_iter()
    .filter(|(f, _)| r.contains(*f))
    .map(|(_, n)| n.to_string())
    .collect()
}

/// Configurable GPUs for tests: snapshots you set, which you may change while a test runs.
#[derive(Debug, Default, Clone)]
pub struct FakeGpus {
    gpus: Arc<Mutex<Vec<GpuSnapshot>>>,
    /// When set, every call fails as NVML does on a machine without a driver.
    unavailable: bool,
}

impl FakeGpus {
    /// `n` identical GPUs with `total_mb` memory each, idle and cool.
    pub fn uniform(n: u32, total_mb: u64) -> FakeGpus {
        FakeGpus::new((0..n).map(|i| FakeGpus::idle(i, total_mb)).collect())
    }

    /// GPUs with exactly these figures.
    pub fn new(gpus: Vec<GpuSnapshot>) -> FakeGpus {
        FakeGpus {
            gpus: Arc::new(Mutex::new(gpus)),
            unavailable: false,
        }
    }

    /// A machine with no NVIDIA driver.
    pub fn without_driver() -> FakeGpus {
        FakeGpus {
            unavailable: true,
            ..FakeGpus::default()
        }
    }

    /// An idle GPU: every field set, as a recent data-centre board reports them.
    pub fn idle(index: u32, total_mb: u64) -> GpuSnapshot {
        GpuSnapshot {
            index,
            name: Some("Fake GPU 80GB".into()),
            uuid: Some(format!("GPU-fake-{index:04}")),
            memory_total_mb: Some(total_mb),
            memory_used_mb: Some(0),
            memory_free_mb: Some(total_mb),
            memory_reserved_mb: Some(0),
            utilization_gpu: Some(0.0),
            utilization_memory: Some(0.0),
            temperature_c: Some(35),
            temperature_slowdown_c: Some(87),
            temperature_shutdown_c: Some(92),
            temperature_max_c: Some(85),
            power_w: Some(60.0),
            power_limit_w: Some(400.0),
            clock_sm_mhz: Some(210),
            clock_sm_max_mhz: Some(1980),
            clock_memory_mhz: Some(1593),
            clock_memory_max_mhz: Some(1593),
            throttle_reasons: Some(vec!["gpu_idle".into()]),
            ecc_corrected: Some(0),
            ecc_uncorrected: Some(0),
            processes: Some(Vec::new()),
        }
    }

    /// Changes one GPU's figures (e.g. a test heats it up).
    pub fn update(&self, index: u32, f: impl FnOnce(&mut GpuSnapshot)) {
        let mut gpus = self.gpus.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gpus.iter_mut().find(|g| g.index == index) {
            f(g);
        }
    }

    /// Reads fake GPUs from JSON (an array of [`GpuSnapshot`]), as `VLLM_MCP_FAKE_GPUS` gives them.
    pub fn from_json(json: &str) -> Result<FakeGpus> {
        if let Ok(n) = json.trim().parse::<u32>() {
            return Ok(FakeGpus::uniform(n, 81_920));
        }
        let gpus: Vec<GpuSnapshot> = serde_json::from_str(json)
            .map_err(|e| Error::invalid("VLLM_MCP_FAKE_GPUS", e.to_string()))?;
        Ok(FakeGpus::new(gpus))
    }
}

impl GpuSource for FakeGpus {
    fn count(&self) -> Result<u32> {
        if self.unavailable {
            return Err(no_driver());
        }
        Ok(self.gpus.lock().unwrap_or_else(|e| e.into_inner()).len() as u32)
    }

    fn snapshot(&self, index: u32) -> Result<GpuSnapshot> {
        let count = self.count()?;
        self.gpus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|g| g.index == index)
            .cloned()
            .ok_or_else(|| {
                Error::invalid(
                    "gpu_ids",
                    format!("GPU {index} does not exist: {count} visible (ids 0..{count})"),
                )
            })
    }

    fn driver_version(&self) -> Result<String> {
        self.count()?;
        Ok("fake-555.42".into())
    }
}

fn no_driver() -> Error {
    Error::GpuUnavailable(
        "NVML could not be loaded (libnvidia-ml.so.1: cannot open shared object file)".into(),
    )
}

/// The GPU source for a server process: fake GPUs when `VLLM_MCP_FAKE_GPUS` is set (a count
/// or a JSON array; for tests and demos), else the real NVML.
pub fn from_env() -> Result<Gpus> {
    match std::env::var("VLLM_MCP_FAKE_GPUS") {
        Ok(v) if v.trim() == "none" => Ok(Arc::new(FakeGpus::without_driver())),
        Ok(v) if !v.trim().is_empty() => Ok(Arc::new(FakeGpus::from_json(&v)?)),
        _ => Ok(Arc::new(Nvml)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_nvml_without_driver_is_an_answer_not_a_panic() {
        // On machines with a GPU this checks the real figures instead.
        match Nvml.snapshots() {
            Ok(gpus) => {
                for g in gpus {
                    assert!(g.memory_total_mb.unwrap_or(1) > 0);
                }
            }
            Err(e) => {
                assert_eq!(e.code(), "GPU_UNAVAILABLE");
                assert!(
                    e.details()["suggestion"]
                        .as_str()
                        .unwrap()
                        .contains("driver")
                );
            }
        }
    }

    #[test]
    fn fake_gpus() {
        let g = FakeGpus::uniform(2, 24_576);
        assert_eq!(g.count().unwrap(), 2);
        g.update(1, |s| s.temperature_c = Some(91));
        assert_eq!(g.snapshot(1).unwrap().temperature_c, Some(91));
        assert_eq!(g.snapshot(2).unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(
            FakeGpus::without_driver().snapshots().unwrap_err().code(),
            "GPU_UNAVAILABLE"
        );
        let j = serde_json::to_string(&g.snapshots().unwrap()).unwrap();
        assert_eq!(
            FakeGpus::from_json(&j).unwrap().snapshots().unwrap(),
            g.snapshots().unwrap()
        );
    }
}
