"""The job estimate: hand computations on published Qwen2.5 configs and a real Lambda H100 row, the ledger's
chunk pricing, the spec reader, and PFG under `cost_objective: job` over random catalogs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratos.catalog import SERVER_COLUMNS
from stratos.job_cost import (
    JobProfile,
    MeasuredTokens,
    ModelSize,
    StudentWork,
    TaskTokens,
    TeacherWork,
    estimate_stage_cost,
)
from stratos.job_estimate import estimate_jobs, planned_job_usd
from stratos.job_profile import job_profile, model_size
from stratos.pfg import grid_cells, select_server
from stratos.spec import (
    Constraints,
    DistillSpec,
    JobEstimateSettings,
    ModelCandidate,
    ServerSettings,
    TaskSpec,
    load_spec,
)

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
# lambda/gpu_1x_h100_pcie/us-east-1 in the shipped catalog: one H100 PCIe (756 dense bf16 TFLOPS,
# 2,000 GB/s in stratos/data/gpu_specs.csv) at $2.49/h.
H100 = {"id": "lambda/gpu_1x_h100_pcie/us-east-1", "cost_per_hour": 2.49, "tflops": 756.0, "gpu_count": 1.0}
H100["bandwidth_gbs"] = 2000.0
TOKENS = TaskTokens(prompt=100, injection_prompt=140, reference=150, source="given")


def config_dir(tmp_path: Path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(DATA / f"{name}.config.json", d / "config.json")
    return str(d)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> DistillSpec:
    tmp = tmp_path_factory.mktemp("configs")
    return DistillSpec.model_validate(
        {
            "task": {"domain": "gsm8k", "train_size": 640, "probe_size": 64, "test_size": 128},
            "teachers": [
                {"name": "qwen-7b", "model": config_dir(tmp, "qwen2.5-7b")},
                {
                    "name": "gpt-4o",
                    "kind": "openai",
                    "model": "gpt-4o",
                    "base_url": "http://127.0.0.1:1/v1",
                    "price_per_1k_input": 0.0025,
                    "price_per_1k_output": 0.01,
                },
            ],
            "students": [{"name": "qwen-0.5b", "model": config_dir(tmp, "qwen2.5-0.5b")}],
            "strategy": {"num_samples": 2, "max_attempts": 4, "max_new_tokens": 256, "prescreen_size": 32},
            "training": {"method": "lora", "num_train_epochs": 2, "max_seq_length": 512, "lora_r": 16},
        }
    ).model_copy(deep=True)


def local_only(spec: DistillSpec) -> DistillSpec:
    """The spec with the local teacher only and no few-shot demos, so every figure is easy to write out."""
    strategy = spec.strategy.model_copy(update={"prescreen_demos": 0})
    return spec.model_copy(update={"teachers": spec.teachers[:1], "strategy": strategy})


# Published Qwen2.5 shapes (tests/test_estimates.py derives these counts from the configs).
P7, KV7 = 7_615_616_512, 57_344
N7 = P7 - 152_064 * 3_584  # untied: the input embedding is a lookup, not a matmul
P05, KV05, LORA05 = 494_032_768, 12_288, 8_798_208  # tied embeddings: all a matmul
FLOPS = 756e12 * 0.4  # prefill and compute-bound decode run at PREFILL_MFU of the peak
BYTES = 2000e9 * 0.8  # decode reads at BANDWIDTH_EFFICIENCY of the bandwidth


def batch_seconds(params: int, matmul: int, kv: int, batch: int, prompt: int, new: int) -> float:
    """One batch by hand: prefill 2N·prompt·batch FLOPs, then `new` steps of max(bytes read, 2N·batch FLOPs)."""
    prefill = 2 * matmul * prompt * batch / FLOPS
    step = max((2 * params + batch * kv * (prompt + new / 2)) / BYTES, 2 * matmul * batch / FLOPS)
    return prefill + new * step


def test_planned_job_of_qwen_7b_teaching_qwen_05b_on_a_lambda_h100_matches_a_hand_computation(spec):
    profile = job_profile(local_only(spec), tokens=TOKENS)
    est = estimate_jobs(profile, pd.DataFrame([H100])).iloc[0]
    price = 2.49 / 3600
    # Before the probe the mode is unknown, so planned = every injection round: ceil(4 / 2) = 2 rounds of
    # 2 samples, 4 completions of 256 tokens (the cap) per question, prompts with the answer (140 tokens),
    # 64 sequences per generate call: 640 x 4 / 64 = 40 batches, at 30% of the roofline, + 120 s loading.
    step = (2 * P7 + 64 * KV7 * (140 + 128)) / BYTES
    assert step == pytest.approx(0.010134, rel=1e-3)  # bandwidth-bound: ~10 ms per decode step
    synthesis_s = 40 * batch_seconds(P7, N7, KV7, 64, 140, 256) / 0.3 + 120
    assert est["synthesis_planned"] == pytest.approx(synthesis_s * price)  # ~$0.36
    # LoRA: every sample kept (640 x 2) x 2 epochs, 100 + 256 tokens each, (4N + 6 N_lora) FLOPs per token
    # on one GPU at 25% MFU, + 120 s loading.
    training_s = 640 * 2 * 2 * 356 * (4 * P05 + 6 * LORA05) / (756e12 * 0.25) + 120
    assert est["training_planned"] == pytest.approx(training_s * price)
    # Probe (64 questions) and test (128) of the teacher, pre-screen zero- and "few"-shot (0 demos, 32 each)
    # and test of the student, 32 per batch, 100 prompt + 256 answer tokens, + 120 s loading.
    teacher = (2 + 4) * batch_seconds(P7, N7, KV7, 32, 100, 256) / 0.3
    student = (1 + 1 + 4) * batch_seconds(P05, P05, KV05, 32, 100, 256) / 0.3
    assert est["evaluation_planned"] == pytest.approx((teacher + student + 120) * price)
    assert est["serving_planned"] == pytest.approx(2.49)  # the first hour
    total = (synthesis_s + training_s + teacher + student + 120) * price + 2.49
    assert est["job_planned"] == pytest.approx(total)
    assert est["gpu_hours"] == pytest.approx((synthesis_s + training_s + teacher + student + 120) / 3600 + 1)
    assert 2.8 < total < 3.2  # most of it the serving hour and the 7B's generation


def test_low_and_high_ends_by_hand(spec):
    profile = job_profile(local_only(spec), tokens=TOKENS)
    est = estimate_jobs(profile, pd.DataFrame([H100])).iloc[0]
    price = 2.49 / 3600
    # low: one trace per question x 2 epochs, 100 + 150 (reference answer) tokens, 40% MFU, no loading time.
    assert est["training_low"] == pytest.approx(
        640 * 2 * 250 * (4 * P05 + 6 * LORA05) / (756e12 * 0.4) * price
    )
    # high: as planned but at 10% MFU and 600 s loading.
    high_s = 640 * 2 * 2 * 356 * (4 * P05 + 6 * LORA05) / (756e12 * 0.1) + 600
    assert est["training_high"] == pytest.approx(high_s * price)
    # low synthesis: one request of 2 samples per question (alignment or a first-round injection
    # success), forward prompt, reference-length answers, 80% of the roofline.
    low_s = 20 * batch_seconds(P7, N7, KV7, 64, 100, 150) / 0.8
    assert est["synthesis_low"] == pytest.approx(low_s * price)
    assert est["job_low"] < est["job_planned"] < est["job_high"]


def test_api_teacher_is_priced_per_token_before_and_after_the_probe(spec):
    before = job_profile(spec, tokens=TOKENS)
    cost = estimate_stage_cost("synthesis", H100, before, "gpt-4o", units=640)
    # planned: 2 injection rounds (2 requests of 140 prompt tokens), 4 completions at the 256-token cap
    assert cost.planned == pytest.approx(640 * (2 * 140 * 0.0025 + 4 * 256 * 0.01) / 1000)  # $7.00
    assert cost.low == pytest.approx(640 * (100 * 0.0025 + 2 * 150 * 0.01) / 1000)  # $2.08
    probed = job_profile(spec, probes={"gpt-4o": MeasuredTokens(90, 200, accuracy=0.8)}, tokens=TOKENS)
    cost = estimate_stage_cost("synthesis", H100, probed, "gpt-4o", units=640)
    # 0.8 >= tau 0.5: alignment, one request of 2 samples; the probe's measured lengths
    assert cost.planned == pytest.approx(640 * (90 * 0.0025 + 2 * 200 * 0.01) / 1000)  # $2.70
    assert cost.high == pytest.approx(640 * (90 * 0.0025 + 2 * 256 * 0.01) / 1000)
    # the costlier teacher is the planned one: GPT-4o's $7 against the 7B's ~$0.36 on this server
    est = estimate_jobs(before, pd.DataFrame([H100])).iloc[0]
    assert est["synthesis_planned"] == pytest.approx(640 * (2 * 140 * 0.0025 + 4 * 256 * 0.01) / 1000)


def test_the_ledger_prices_chunks_that_add_up_to_the_stage(spec):
    profile = job_profile(local_only(spec), tokens=TOKENS)
    est = estimate_jobs(profile, pd.DataFrame([H100])).iloc[0]
    price = 2.49 / 3600
    chunks = [estimate_stage_cost("synthesis", H100, profile, "qwen-7b", units=32) for _ in range(20)]
    assert sum(c.planned for c in chunks) == pytest.approx(est["synthesis_planned"] - 120 * price)
    steps = 640 * 2 * 2 / 16  # sequences / per_device_train_batch_size (16)
    train = estimate_stage_cost("training", H100, profile, "qwen-0.5b", units=steps)
    assert train.planned == pytest.approx(est["training_planned"] - 120 * price)
    assert train.low < train.planned < train.high
    assert estimate_stage_cost("serving", H100, profile, units=3).planned == pytest.approx(3 * 2.49)
    with pytest.raises(ValueError, match="student 'nope' is not in the job profile.*qwen-0.5b"):
        estimate_stage_cost("training", H100, profile, "nope", units=1)


def test_gsm8k_gpu_example_is_read_offline_with_honest_assumptions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = load_spec(ROOT / "examples/gsm8k-gpu.yaml")
    profile = job_profile(spec)
    sizes = {w.name: w.size.params for w in (*profile.teachers, *profile.students) if w.size}
    assert sizes == {"qwen2.5-7b": 7e9, "qwen2.5-0.5b": 0.5e9, "qwen2.5-1.5b": 1.5e9, "qwen2.5-3b": 3e9}
    assert [s.method for s in profile.students] == ["lora"] * 3
    notes = " ".join(n for stage in profile.notes.values() for n in stage)
    assert "from the name (no config offline)" in notes and "gpt-4o: API at $0.0025 / $0.01" in notes
    # 64 vendored GSM8K questions at 4 characters per token: the prompt is a system line plus a question
    assert 50 < profile.tokens.prompt < 120 and profile.tokens.injection_prompt > profile.tokens.prompt


def test_models_that_cannot_be_sized_are_left_out_with_the_reason(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = DistillSpec.model_validate(
        {
            "task": {"domain": "arithmetic"},
            "teachers": [{"name": "t", "model": "acme/mystery-model"}],
            "students": [{"name": "nano", "model": "zoo:nano"}],
        }
    )
    profile = job_profile(spec, tokens=TOKENS)
    assert profile.teachers == ()
    assert "hub id 'acme/mystery-model' is unreadable offline and its name states no size" in " ".join(
        profile.notes["synthesis"]
    )
    assert "no teacher could be sized: synthesis is not estimated" in profile.notes["synthesis"][-1]
    # zoo:nano is sized from stratos.zoo.SIZES without building it: the README's 558,208 parameters
    assert profile.students[0].size.params == 558_208 and profile.students[0].method == "full"


def test_a_spec_without_a_task_is_serving_only():
    profile = job_profile(DistillSpec())
    est = estimate_jobs(profile, pd.DataFrame([H100])).iloc[0]
    assert est["job_planned"] == est["job_high"] == est["serving_planned"] == pytest.approx(2.49)
    assert "only serving is estimated" in profile.notes["training"][0]


# ---------------------------------------------------------------- PFG under cost_objective: job

PROFILE = JobProfile(
    JobEstimateSettings(),
    task=TaskSpec(domain="arithmetic", train_size=500, probe_size=50, test_size=100),
    tokens=TOKENS,
    teachers=(
        TeacherWork("local", "hf", ModelSize(7e9, 7e9, 0, 57_344, "given")),
        TeacherWork("api", "openai", None, 2.5e-6, 1e-5),
    ),
    students=(StudentWork("s", ModelSize(1.5e9, 1.3e9, 1.8e7, 28_672, "given"), "lora"),),
)
GPU = st.sampled_from([(125.0, 600.0), (312.0, 1555.0), (362.0, 864.0), (756.0, 2000.0), (989.0, 3350.0)])
server = st.tuples(
    GPU,
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([0.4, 1.29, 2.49]) | st.floats(0.1, 40),
    st.sampled_from([2.0, 15.0, 80.0]) | st.floats(1, 300),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def job_servers(rows) -> pd.DataFrame:
    """Catalog rows from ((one GPU's TFLOPS, bandwidth), GPU count, $/h, measured latency ms) tuples."""
    df = pd.DataFrame(
        {
            "tflops": [g[0] * n for g, n, _, _ in rows],
            "gpu_count": [float(n) for _, n, _, _ in rows],
            "bandwidth_gbs": [g[1] for g, _, _, _ in rows],
            "price": [price for _, _, price, _ in rows],
            "measured_latency_ms": [lat for _, _, _, lat in rows],
            "total_gpu_memory_gb": [80.0 * n for _, n, _, _ in rows],
        }
    )
    df["id"] = [f"test/s{i:04d}/r" for i in range(len(df))]
    df["cloud"], df["instance_type"], df["region"], df["zone"], df["accelerator"] = (
        "test",
        "x",
        "r",
        "",
        "H100",
    )
    df["gpu_memory_gb"], df["spot_price"], df["lat"], df["lon"] = 80.0, np.nan, np.nan, np.nan
    df["location_source"], df["location"], df["hardware_source"] = "exact", "", "exact"
    return df[SERVER_COLUMNS]


@FAST
@given(st.lists(server, min_size=1, max_size=50), st.floats(5, 200), st.integers(1, 12))
def test_job_objective_picks_the_cheapest_job_of_its_pareto_cell_and_keeps_the_budget(rows, budget, k):
    constraints = Constraints(region="us-east", max_latency_ms=250, budget_usd=budget)
    cfg = ServerSettings(cost_objective="job", grid_k=k)
    sel = select_server(job_servers(rows), constraints, cfg, job=PROFILE)
    s = sel.servers
    assert np.allclose(s["job_usd"], sel.job_estimates()["job_planned"])
    assert (s.loc[s["feasible"], "job_usd"] <= budget).all()
    # the estimated job is the only cost filter (no planned_hours, no hourly cap)
    assert (s["feasible"] == (s["job_usd"] <= budget) & (s["latency_ms"] <= 250)).all()
    if not sel.feasible:
        return
    feasible = s[s["feasible"]]
    cells = grid_cells(feasible[["norm_hardware", "norm_cost", "norm_latency"]].to_numpy(), k, cfg.sigma)
    same_cell = feasible[(cells == np.array(sel.chosen_cell)).all(axis=1)]
    assert sel.chosen in set(same_cell["id"])
    assert sel.row(sel.chosen)["job_usd"] <= same_cell["job_usd"].min()


def test_planned_hours_keeps_the_hourly_budget_rule():
    servers = job_servers([((756.0, 2000.0), 1, 2.49, 5.0), ((989.0, 3350.0), 8, 30.0, 5.0)])
    constraints = Constraints(region="us-east", budget_usd=50)
    sel = select_server(servers, constraints, ServerSettings(planned_hours=2), job=PROFILE)
    assert sel.servers["feasible"].tolist() == [
        True,
        False,
    ]  # $30/h x 2 h > $50; the job estimate is not used
    assert "2 planned hours would exceed the $50 budget" in sel.constraint_text["budget"]
    assert planned_job_usd(PROFILE, sel.servers)[1] < 50  # ...though the estimated job would fit


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_shipped_spec_has_a_job_profile(name: str) -> None:
    """Server selection sizes every teacher and student before anything is built: every zoo name
    a spec may use must have a shape (zoo:smollm2-135m-instruct had none, and the run stopped there)."""
    spec = load_spec(ROOT / "examples" / name)
    profile = job_profile(spec, tokens=TOKENS)
    assert len(profile.students) == len(spec.students) and len(profile.teachers) == len(spec.teachers)


def test_the_real_pretrained_zoo_model_is_sized_by_its_published_shape() -> None:
    size, why = model_size(ModelCandidate(name="smollm2", model="zoo:smollm2-135m-instruct"), lora_r=16)
    assert size is not None and size.params == 134_515_008  # the built model's count (stratos.pretrained)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in why
