"""A sampler thread: GPU utilisation, memory and power (NVIDIA through nvidia-ml-py, AMD
through amdsmi when importable), plus process CPU and RSS, every monitor_interval seconds,
as "system" rows of the run's metrics."""
from __future__ import annotations

import threading
import time


def _nvidia(index: int):
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(index)

    def sample():
        u = pynvml.nvmlDeviceGetUtilizationRates(h)
        m = pynvml.nvmlDeviceGetMemoryInfo(h)
        return {"gpu_util": float(u.gpu), "gpu_mem_mb": m.used / 2**20,
                "gpu_power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0}
    return sample


def _amd(index: int):
    import amdsmi
    amdsmi.amdsmi_init()
    h = amdsmi.amdsmi_get_processor_handles()[index]

    def sample():
        act = amdsmi.amdsmi_get_gpu_activity(h)
        vram = amdsmi.amdsmi_get_gpu_vram_usage(h)
        power = amdsmi.amdsmi_get_power_info(h)
        return {"gpu_util": float(act["gfx_activity"]), "gpu_mem_mb": float(vram["vram_used"]),
                "gpu_power_w": float(power.get("average_socket_power", 0))}
    return sample


def gpu_sampler(device):
    """A function returning one GPU sample, or None where no GPU library works."""
    if getattr(device, "type", device) != "cuda":
        return None
    import torch
    index = device.index or 0
    # CUDA_VISIBLE_DEVICES renumbers torch's devices; NVML/amdsmi see physical ones
    visible = __import__("os").environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible and visible.split(",")[index].strip().isdigit():
        index = int(visible.split(",")[index])
    for make in ((_amd,) if torch.version.hip else (_nvidia,)):
        try:
            return make(index)
        except Exception:
            return None
    return None


class Monitor:
    def __init__(self, interval, emit, gpu):
        import psutil
        self.proc, self.interval, self.emit, self.gpu = psutil.Process(), interval, emit, gpu
        self.stop_event = threading.Event()
        self.samples = 0
        self.thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
        self.proc.cpu_percent()
        self.thread.start()

    def _loop(self):
        t0 = time.time()
        while not self.stop_event.wait(self.interval):
            row = {"kind": "system", "time": time.time() - t0,
                   "cpu_percent": self.proc.cpu_percent(),
                   "rss_mb": self.proc.memory_info().rss / 2**20}
            if self.gpu:
                try:
                    row.update(self.gpu())
                except Exception:
                    self.gpu = None
            try:
                self.emit(row)
                self.samples += 1
            except Exception as e:  # a full disk or a tracker hiccup must not stop sampling
                print(f"warning: monitor sample not recorded ({type(e).__name__}: {e})", flush=True)

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=5)


def start(cfg, device, emit):
    if cfg.monitor_interval <= 0:
        return None
    return Monitor(cfg.monitor_interval, emit, gpu_sampler(device))
