"""Layout enumeration, vLLM's structural rules, GPU choice, all-reduce curves and backend rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gpuprobe.predict.calibration import Calibration, load_calibration, save_calibration
from gpuprobe.predict.layouts import assign_gpus, check_layout, enumerate_shapes
from gpuprobe.predict.model_spec import WeightFormat, load_model_spec
from gpuprobe.predict.options import ServeOptions
from gpuprobe.predict.recommend import predict_layout
from gpuprobe.predict.system import system_from_results, system_from_spec
from gpuprobe.predict.traffic import Traffic


def test_enumeration_counts() -> None:
    assert len(enumerate_shapes(1)) == 1
    assert len(enumerate_shapes(2)) == 4  # (1,1,1) (1,1,2) (1,2,1) (2,1,1)
    assert len(enumerate_shapes(8)) == 38
    assert all(tp * pp * r <= 8 for tp, pp, r in enumerate_shapes(8))


def test_structural_rules(configs: Path) -> None:
    llama = load_model_spec(configs / "llama-3.1-8b.json")
    assert "attention heads" in check_layout(llama, 3, 1)
    assert check_layout(llama, 8, 1) is None
    assert "exceeds" in check_layout(llama, 1, 33)
    awq = load_model_spec(configs / "qwen2.5-7b-instruct-awq.json")
    assert check_layout(awq, 4, 1) is None  # 18944 / 4 = 4736 = 37 x 128
    assert "attention heads (28)" in check_layout(awq, 8, 1)
    moe = load_model_spec(configs / "qwen3-30b-a3b.json")
    assert check_layout(moe, 8, 1) is None
    assert check_layout(moe.with_quantization("fp8"), 8, 1) is None  # per-tensor FP8: no block alignment
    # Block-FP8 (128 x 128, as Qwen3-30B-A3B-FP8 ships) and AWQ g128: 768 / 8 = 96 is not aligned.
    block = replace(moe, weights=WeightFormat("fp8", 8, block_size=(128, 128)))
    assert "FP8 block size 128" in check_layout(block, 8, 1)
    assert check_layout(block, 2, 1) is None
    assert "AWQ group size 128" in check_layout(moe.with_quantization("awq"), 4, 1)
    ds = load_model_spec(configs / "deepseek-v3.json")
    assert check_layout(ds, 8, 1) is None and check_layout(ds, 3, 1) is not None


def test_system_from_results_sources(box) -> None:
    sysp = system_from_results(box(8))
    g = sysp.gpus[0]
    assert g.hbm_gbps.source == "measured" and g.hbm_gbps.value == pytest.approx(2 * 1488.21)
    assert g.h2d_gbps.value == pytest.approx(52.78) and g.bf16_tflops.source == "spec"
    assert g.memory_bytes.value == pytest.approx((81559 << 20) - int(0.47 * 2**30))
    pair = sysp.allreduce_curve((0, 1))
    assert pair.source == "measured" and pair.busbw_gbps == pytest.approx(365, rel=0.05)
    four = sysp.allreduce_curve((0, 1, 2, 3))
    assert four.source == "fitted"
    assert pair.alpha_us < four.alpha_us < sysp.allreduce_curve(tuple(range(8))).alpha_us
    # log-size interpolation stays between the neighbouring measured points
    t1, t2 = pair.time_us(1 << 20), pair.time_us(1 << 22)
    assert t1 < pair.time_us(1 << 21) < t2


def _backend(sysp, configs: Path, tp: int) -> str:
    spec = load_model_spec(configs / "llama-3.1-8b.json")
    layout = assign_gpus(sysp, tp, 1, 1)
    res = predict_layout(spec, sysp, layout, Traffic("closed", 64, 128, 64, 8), ServeOptions(max_model_len=4096),
                         Calibration())
    return res.allreduce_backend


def test_allreduce_backend_rules(box, configs: Path) -> None:
    nvl = system_from_results(box(8, nvlink=True))
    pcie = system_from_results(box(8, nvlink=False))
    assert _backend(nvl, configs, 1) == "none"
    assert _backend(nvl, configs, 4).startswith("custom")  # all pairs NVLink
    assert _backend(pcie, configs, 2).startswith("custom")  # two PCIe GPUs with P2P keep custom AR
    assert _backend(pcie, configs, 4) == "nccl"  # > 2 PCIe-only GPUs: vLLM disables custom AR
    no_p2p = system_from_spec("RTX-4090", 2)
    assert _backend(no_p2p, configs, 2) == "nccl"  # P2P disabled by the driver


def test_gpu_choice_prefers_nvlink_pairs() -> None:
    sysp = system_from_spec("L40S", 4)
    sysp.path_class[(1, 2)] = "NV4"  # one bridged pair
    layout = assign_gpus(sysp, 2, 1, 1)
    assert layout.groups[0][0] == (1, 2)


def test_calibration_round_trip(tmp_path: Path) -> None:
    cal = Calibration(hbm_efficiency=0.8)
    cal.memory.sampler_bytes_per_logit = 4.0
    cal.band_ttft_ms = [0.5, 2.0]
    save_calibration(cal, tmp_path / "cal.json")
    back = load_calibration(tmp_path / "cal.json")
    assert back.hbm_efficiency == 0.8 and back.memory.sampler_bytes_per_logit == 4.0
    assert back.band("ttft_ms", 10.0) == [5.0, 20.0]
    assert back.source.endswith("cal.json")


def test_real_h100_results_file(h100_results_path: Path, configs: Path) -> None:
    """The committed single-H100 results file."""
    from gpuprobe.predict.recommend import recommend
    from gpuprobe.results import load_results

    sysp = system_from_results(load_results(h100_results_path), name=h100_results_path.name)
    assert sysp.gpu_count == 1 and sysp.gpus[0].spec is not None
    rec = recommend(load_model_spec(configs / "llama-3.1-8b.json"), sysp, ServeOptions(), Traffic(), Calibration())
    assert len(rec.layouts) == 1 and rec.layouts[0].fits
