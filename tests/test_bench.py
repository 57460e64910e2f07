"""Benchmarks compute what they claim (equal results on both sides); no timing is asserted."""

from __future__ import annotations

import math

import pytest

from mmsr_lib.bench import bench_eval, bench_frozen, bench_train


def test_bench_eval_fast_equals_reference_loop():
    r = bench_eval(n_users=60, n_items=500, dim=8, batch_size=7, repeat=1)
    assert r["metrics_equal"] and r["metrics_fast"] == r["metrics_reference"]
    assert r["speedup"] > 0


def test_bench_train_plain_and_fast_compute_the_same_losses():
    r = bench_train(
        steps=2, device="cpu", profile=True, isolate=False, count_flops=True,
        text="tiny-roberta", vision="tiny-mae", dim=32, n_users=120, n_items=80, image_size=32,
        batch_size=16, max_len=8, text_tokens=24,
    )
    assert r["max_abs_loss_difference"] < 1e-4, r["losses_plain"]
    assert r["distinct_items_per_batch"] < r["slots_per_batch_plain"]
    assert r["flops_per_step"]["plain"] > r["flops_per_step"]["fast"] > 0
    assert r["profile_fast"] and 0 < r["floor_top_blocks_seconds"] and 0 < r["floor_item_encoder_seconds"]


def test_scaling_measures_plain_and_fast_and_draws_both(tmp_path):
    """The scaling figure shows the plain reference beside the fast path (both measured)."""
    from mmsr_lib.bench import bench_eval_scaling_both, bench_train_scaling

    tr = bench_train_scaling(lengths=(4,), steps=2, device="cpu", text="tiny-roberta",
                             vision="tiny-mae", dim=32, n_users=80, n_items=60, image_size=32,
                             batch_size=8, text_tokens=16)
    assert {r["mode"] for r in tr["rows"]} == {"plain", "fast"}
    assert all(r["step_seconds"] > 0 for r in tr["rows"])
    ev = bench_eval_scaling_both(catalogs=(200, 400), n_users=16, dim=8, reference_up_to=200)
    assert [(r["n_items"], r["mode"]) for r in ev["rows"]] == [(200, "fast"), (400, "fast"),
                                                              (200, "plain")]


def test_bench_frozen_memo_and_per_step_paths_compute_the_same_losses():
    r = bench_frozen(steps=3, profile="smoke", vision_encoder="tiny-resnet")
    assert r["max_abs_loss_difference"] < 1e-5
    assert len(r["losses_memo"]) == 3 and all(math.isfinite(x) for x in r["losses_memo"])
    assert r["speedup"] > 0


@pytest.mark.parametrize("row", ["CARCA++", "MMSR"])
def test_bench_memo_rows_lazy_and_eager_tokens_compute_the_same_losses(row):
    """CARCA++ reads the pooled vector only, MMSR's merge-attention the tokens: both train to
    the same losses, bit for bit, whether the memo's tokens are gathered at once or on demand."""
    from mmsr_lib.bench import bench_memo_rows

    r = bench_memo_rows(steps=3, row=row, profile="smoke", vision_encoder="tiny-resnet")
    assert r["settings"]["loss"] == "bce" and len(r["losses_lazy"]) == 3
    assert r["max_abs_loss_difference"] == 0.0 and r["losses_lazy"] == r["losses_eager"]
    assert all(math.isfinite(x) for x in r["losses_lazy"]) and r["speedup"] > 0
    with pytest.raises(ValueError, match="not a Table V row"):
        bench_memo_rows(steps=1, row="nope", profile="smoke")


def test_bench_grid_one_process_and_side_by_side_store_the_same_metrics():
    from mmsr_lib.bench import bench_grid

    r = bench_grid(epochs=1, rows=("IDSR", "MMSR-T"), seeds=(42,), profile="smoke")
    assert r["settings"]["runs"] == 2
    assert set(r["test_metrics"]["one_process"]) == {"IDSR seed 42", "MMSR-T seed 42"}
    assert r["one_process"]["processes"] == 1 and r["side_by_side"]["processes"] >= 1
    # same configurations and seeds: the same numbers up to float rounding of the thread
    # count, which can move at most a tie-breaking user or so (one of ~300 is 0.33 points)
    assert r["max_abs_metric_difference"] < 0.5
    assert r["speedup"] > 0


def test_bench_carca_scorer_trimmed_equals_plain():
    """Grouping users by history length and leaving out padded positions changes no rank."""
    from mmsr_lib.bench import bench_carca_scorer

    r = bench_carca_scorer(split="valid", repeat=1, profile="smoke")
    assert r["ranks_equal"] and r["metrics_plain"] == r["metrics_trimmed"]
    assert r["max_abs_score_difference"] < 1e-12
    assert r["settings"]["mean_history_length"] < r["settings"]["max_len"]  # padding to skip


def test_gpu_peak_is_the_cards_own():
    """MFU divides by the card's dense bf16 peak: the PCIe H100's is not the SXM's, and a card
    not in the table gets none (no MFU) rather than another card's."""
    from mmsr_lib.bench import dense_bf16_peak

    assert dense_bf16_peak("NVIDIA H200") == 989e12
    assert dense_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert dense_bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert dense_bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert dense_bf16_peak("Tesla T4") is None


def test_the_gpu_box_pack_holds_the_tokenizer_and_no_weights(tmp_path):
    """`make gpu-pack`: the slice of the MiniLM package that the GPU box's Python lacks, laid out
    so that, first on its path, the library finds the tokenizer there (and no weights: ~1 MB,
    inside the device tool's 64 MiB)."""
    import os
    import subprocess
    import sys

    from mmsr_lib.bench import pack_for_device

    site = tmp_path / "site"
    files = pack_for_device(str(site))
    assert any(f.endswith("vocab.txt") for f in files)
    assert not list(site.rglob("*.safetensors"))
    assert sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) < 2**21
    found = subprocess.run(
        [sys.executable, "-c", "from mmsr_lib.encoders import offline_weights as o; "
         "print(o.minilm_dir())"], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(site)}).stdout.strip()
    assert found.startswith(str(site)), found
