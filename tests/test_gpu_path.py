"""The GPU path: the graphed SGD step's code, copies folded into the batch, seeds_per_job:
auto, and bench/bench_gpu.py. On the CPU the graphed step's static-buffer code runs eagerly,
so its logic (plans gathered on the device, the learning rate as a tensor, the momentum
buffers adopted after a load, the short last batch) is tested here without a GPU; the tests
marked ``cuda`` also capture and replay graphs where a GPU is present."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from critperiods.pipeline import plan
from critperiods.train.copies import copies_forward
from critperiods.train.folded import FoldedModel
from critperiods.train.models import build_model
from critperiods.train.stacked import StackedTrainer
from critperiods.train.training import ALWAYS_BLURRED, FastPath, Trainer, train_until
from tests.conftest import bench_module
from tests.test_training import HASH, assert_state_equal, stop_after

ROOT = Path(__file__).resolve().parents[1]
GRAPHED_CODE = FastPath(channels_last=True, cuda_graphs=True)  # on the CPU: run eagerly
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("model", ["small_cnn", "all_cnn_c"])
def test_graphed_step_code_follows_the_eager_step(cfg, data, model):
    """Same plans, same SGD: the static-buffer step (40-sample batches leave a short last
    batch) trains like the eager loop to float round-off, in the same state format."""
    cfg = replace(cfg, model=model)
    eager, graphed = Trainer(cfg, data, 40, 0), Trainer(cfg, data, 40, 0, fast=GRAPHED_CODE)
    for _ in range(2):
        assert eager.train_epoch(1) == pytest.approx(graphed.train_epoch(1), rel=1e-5)
    a, b = eager.state(), graphed.state()
    assert max_diff(a["model"], b["model"]) < 1e-5
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert (a["epoch"], a["step"], a["batch_in_epoch"]) == (b["epoch"], b["step"], 0)


def test_graphed_step_code_resumes_mid_epoch_bit_for_bit(cfg, data):
    """A state loaded mid-epoch (weights, BatchNorm buffers, momentum) continues exactly as
    the uninterrupted run: the loaded momentum is copied into the step's own buffers."""
    cfg = replace(cfg, model="all_cnn_c")
    whole = Trainer(cfg, data, 32, 1, fast=GRAPHED_CODE)
    train_until(whole, 2, 1, set(), [[]], HASH, progress=False)
    cut = Trainer(cfg, data, 32, 1, fast=GRAPHED_CODE)
    cut.train_epoch(1)
    assert cut.train_epoch(1, stop_after(2)) is None
    resumed = Trainer(cfg, data, 32, 1, fast=GRAPHED_CODE)
    resumed.train_epoch(1)  # its buffers exist and hold other values: load must overwrite
    resumed.load_state(cut.state())
    train_until(resumed, 2, 1, set(), [[]], HASH, progress=False)
    assert_state_equal(resumed.state(), whole.state())
    # an initial state (no momentum yet) restarts the momentum as torch.optim.SGD does
    fresh = Trainer(cfg, data, 32, 1, fast=GRAPHED_CODE)
    again = Trainer(cfg, data, 32, 1, fast=GRAPHED_CODE)
    start = again.state()
    again.train_epoch(1)
    again.load_state(start)
    assert_state_equal(again.state(), fresh.state())
    for t in (fresh, again):
        t.train_epoch(1)
    assert_state_equal(again.state(), fresh.state())


@pytest.fixture
def emulated_capture(monkeypatch):
    """CUDA graph capture emulated on the CPU: the capture's warm-up and restore run for
    real, the "captured" step runs eagerly (its effects are undone by the restore, as a real
    capture records without running), and a replay takes the eager step the graph holds."""
    import contextlib

    from critperiods.train import cuda_graphs

    class Graph:
        steps = phase = None

        def replay(self) -> None:
            self.steps._step(self.steps.batch_size, self.phase)

    captured = []
    real_step = cuda_graphs.GraphedSGD._step

    def step(self, size, phase):
        captured.append((self, phase))
        return real_step(self, size, phase)

    @contextlib.contextmanager
    def graph(g, **_):
        yield
        g.steps, g.phase = captured[-1]

    monkeypatch.setattr(cuda_graphs.GraphedSGD, "_step", step)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)

    def trainer(*args, **kwargs) -> Trainer:
        t = Trainer(*args, fast=GRAPHED_CODE, **kwargs)
        t.graphs.capture = True  # what a CUDA device sets
        return t

    return trainer


def test_a_failed_step_capture_trains_on_eagerly_with_a_fresh_pool(cfg, data, monkeypatch):
    """A capture CUDA refuses (it happened once on a mid-epoch resume) leaves the job on
    eager steps, trained as if no capture had been tried, bit for bit; the next capture gets
    a fresh memory pool, since the failed one was never closed."""
    import contextlib

    @contextlib.contextmanager
    def refused(g, **_):
        raise RuntimeError("CUDA error: operation failed due to a previous error during "
                           "capture")
        yield

    pools = iter(range(100))
    monkeypatch.setattr(torch.cuda, "graph", refused)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: next(pools))
    eager = Trainer(cfg, data, 32, 0, fast=GRAPHED_CODE)
    train_until(eager, 2, 1, set(), [[]], HASH, progress=False)
    tried = Trainer(cfg, data, 32, 0, fast=GRAPHED_CODE)
    tried.graphs.capture = True  # what a CUDA device sets
    with pytest.warns(UserWarning, match="capture of the .* step failed"):
        train_until(tried, 2, 1, set(), [[]], HASH, progress=False)
    assert set(tried.graphs.graphs.values()) == {None}
    assert tried.graphs.pool == len(tried.graphs.graphs) - 1  # one fresh pool per failure
    assert_state_equal(tried.state(), eager.state())


@pytest.mark.parametrize("left", [1, 2, 3])
def test_a_capture_near_the_end_of_an_epoch_stays_inside_it(cfg, data, emulated_capture, left):
    """A job resumed at one of the last full batches captures there: its warm-up steps must
    not run past the epoch (they all retake the batch it starts from). The emulated capture
    trains as the eager steps do, bit for bit."""
    whole = Trainer(cfg, data, 32, 0, fast=GRAPHED_CODE)  # 192 samples: 6 full batches
    train_until(whole, 2, 1, set(), [[]], HASH, progress=False)
    cut = Trainer(cfg, data, 32, 0, fast=GRAPHED_CODE)
    cut.train_epoch(1)
    assert cut.train_epoch(1, stop_after(6 - left)) is None
    resumed = emulated_capture(cfg, data, 32, 0)
    resumed.load_state(cut.state())
    train_until(resumed, 2, 1, set(), [[]], HASH, progress=False)
    assert resumed.graphs.graphs  # the capture happened
    assert_state_equal(resumed.state(), whole.state())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_llc_on_cuda_runs_deterministic_cudnn_and_float32_without_tf32(precision):
    """λ̂ repeats bit for bit on a machine only with deterministic cuDNN kernels, and
    "float32" is not float32 with cuDNN's default TF32; the settings are put back after."""
    from critperiods.measure.llc.sampler import cuda_numerics

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.benchmark = True  # as a training job in the same process may have left it
    try:
        with cuda_numerics(torch.device("cuda"), precision):
            assert cudnn.deterministic and not cudnn.benchmark
            if precision == "float32":
                assert not cudnn.allow_tf32 and not matmul.allow_tf32
            else:  # bf16 passes: TF32 is left as it was (bf16 is coarser anyway)
                assert (cudnn.allow_tf32, matmul.allow_tf32) == before[2:]
        assert cudnn.benchmark and cudnn.deterministic == before[0]
        with cuda_numerics(torch.device("cpu"), precision):  # nothing to set on the CPU
            assert cudnn.benchmark
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = before


def test_a_dropped_trainer_frees_its_graphs_at_once(cfg, data):
    """No reference cycle: the graphs (and their memory) go with the trainer, never in a
    garbage collection that could run during another trainer's capture."""
    import gc
    import weakref

    trainer = Trainer(cfg, data, 32, 0, fast=GRAPHED_CODE)
    trainer.train_epoch(ALWAYS_BLURRED)
    graphs = weakref.ref(trainer.graphs)
    gc.disable()
    try:
        del trainer
        assert graphs() is None
    finally:
        gc.enable()


def test_stacked_graphed_step_code_follows_the_eager_stack(cfg, data):
    eager = StackedTrainer(cfg, data, 32, (0, 1))
    graphed = StackedTrainer(cfg, data, 32, (0, 1), fast=GRAPHED_CODE)
    for t in (eager, graphed):
        train_until(t, 2, 1, set(), [[], []], HASH, progress=False)
    for a, b in zip(eager.members(), graphed.members(), strict=True):
        assert max_diff(a.weights(), b.weights()) < 1e-5


@pytest.mark.parametrize("name", ["small_cnn", "all_cnn_c", "resnet18"])
@pytest.mark.parametrize("training", [True, False])
def test_copies_folded_into_the_batch_compute_each_copy_on_its_own(name, training):
    channels = 1 if name == "small_cnn" else 3
    models = [build_model(name, 4, channels, 8, 10, s) for s in range(3)]
    template = copy.deepcopy(models[0]).to("meta").train(training)
    x = torch.randn(3, 5, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for forward in (copies_forward(template, "batch"),
                    vmap(lambda p, b, xx: functional_call(template, (p, b), (xx,)))):
        params, buffers = stack_module_state(models)
        params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        out = forward(params, buffers, x)
        grads = torch.autograd.grad(out.square().sum(), list(params.values()))
        results.append((out, grads, buffers))
    (out, grads, buffers), (ref, ref_grads, ref_buffers) = results
    assert FoldedModel(template).supports(*stack_module_state(models), x)  # no vmap fallback
    assert torch.allclose(out, ref, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):  # train-mode BatchNorm on 5 samples
        assert (g - r).norm() <= 1e-4 * r.norm() + 1e-6  # amplifies round-off: relative
    for key in buffers:  # BatchNorm statistics per copy, updated in place in training mode
        assert torch.allclose(buffers[key].float(), ref_buffers[key].float(), atol=1e-6), key


def test_seeds_per_job_auto_stacks_small_models_on_cuda_only(monkeypatch):
    config = {"device": "auto", "grid": {"seeds": [0, 1, 2, 17]}, "model": {"name": "small_cnn"},
              "train": {"seeds_per_job": "auto"}}
    big = {**config, "device": "cuda", "model": {"name": "all_cnn_c"}}
    monkeypatch.setenv(plan.DAG_GPU_ENV, "")  # no DAG's machine: probe this one
    monkeypatch.delenv(plan.DAG_GPU_ENV)
    assert plan.seed_group(big, 1) == [1]  # All-CNN-C fills an H200 alone
    monkeypatch.setattr(plan, "cuda_visible", lambda: False)
    assert plan.seed_group(config, 1) == [1]  # a CPU machine (or a login node): alone
    assert plan.seed_group({**config, "device": "cuda"}, 1) == [0, 1, 2]  # blocks of 16
    assert plan.seed_group({**config, "device": "cuda"}, 17) == [17]
    monkeypatch.setattr(plan, "cuda_visible", lambda: True)
    assert plan.seed_group(config, 2) == [0, 1, 2]
    assert plan.seed_group({**config, "device": "cpu"}, 2) == [2]
    explicit = {**config, "device": "cuda", "train": {"seeds_per_job": 2}}
    assert plan.seed_group(explicit, 1) == [0, 1]


def test_seeds_per_job_auto_groups_as_the_machine_that_built_the_dag_decided(monkeypatch):
    """A cluster job reads the workflow again on its own node: where the DAG's machine (a
    login node) showed no GPU, a job on a GPU node groups the seeds as it did, not as its
    own node would; where nothing is pinned (a CLI command), the machine is probed. The
    pin is set once, by the first process, and kept by the jobs it starts."""
    config = {"device": "auto", "grid": {"seeds": [0, 1, 2]}, "model": {"name": "small_cnn"},
              "train": {"seeds_per_job": "auto"}}
    monkeypatch.setenv(plan.DAG_GPU_ENV, "")  # recorded, so that teardown removes the pin
    monkeypatch.delenv(plan.DAG_GPU_ENV)
    monkeypatch.setattr(plan, "cuda_visible", lambda: False)  # the login node
    plan.pin_dag_gpu()
    assert os.environ[plan.DAG_GPU_ENV] == "0"
    monkeypatch.setattr(plan, "cuda_visible", lambda: True)  # the job's GPU node
    plan.pin_dag_gpu()  # the job's own read of the workflow keeps the DAG's value
    assert os.environ[plan.DAG_GPU_ENV] == "0"
    assert plan.seed_group(config, 1) == [1]
    assert plan.seed_group({**config, "device": "cuda"}, 1) == [0, 1, 2]  # cuda: always
    monkeypatch.setenv(plan.DAG_GPU_ENV, "1")
    monkeypatch.setattr(plan, "cuda_visible", lambda: False)
    assert plan.seed_group(config, 1) == [0, 1, 2]
    monkeypatch.delenv(plan.DAG_GPU_ENV)
    assert plan.seed_group(config, 1) == [1]  # not pinned: this machine's own answer


def test_the_workflow_pins_the_dag_machines_gpu_before_it_groups_the_seeds():
    """``common.smk`` pins it (so that the SLURM executor's ``--export=ALL`` hands it to
    every job) before ``GROUPS``, the seed groups the divergence and perturbation rules
    read their inputs from."""
    text = (Path(__file__).parents[1] / "workflow/rules/common.smk").read_text()
    assert "plan.pin_dag_gpu()" in text
    assert text.index("plan.pin_dag_gpu()") < text.index("GROUPS = ")


def test_cuda_visible_respects_an_empty_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not plan.cuda_visible()


def test_fast_path_on_cuda_graphs_the_step_and_picks_bf16_per_model():
    gpu = torch.device("cuda")
    assert FastPath.for_device(gpu).cuda_graphs
    assert not FastPath.for_device(gpu, compile=True).cuda_graphs
    assert not FastPath.for_device(gpu, "off").cuda_graphs
    assert FastPath.for_device(gpu, model="all_cnn_c").bf16
    assert not FastPath.for_device(gpu, model="small_cnn").bf16
    assert FastPath.for_device(gpu, "on", model="small_cnn").bf16
    assert FastPath.for_device(torch.device("cpu"), model="all_cnn_c") == FastPath(
        channels_last=True)


def test_bench_gpu_smoke_runs_every_section(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), "--smoke",
                           "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "gpu.md").read_text()
    for heading in ("## Correctness", "## Training", "## Stacked seeds", "## Fashion-MNIST",
                    "## λ̂", "## Cost", "## Levers"):
        assert heading in text, heading
    # the levers: compile inside the graphed step, and two processes measured together
    assert re.search(r"\| 8 \| [\d,]+ \| [\d,]+ \([\d.]+×\) \| n/a \|", text)
    assert re.search(r"\| 2 \| [\d,]+ \| [\d.]+× \|", text)
    assert "GPU-hours**, with compile **" in text
    assert "FAILED" not in text and "**NO**" not in text
    assert "| small_cnn | graphed, deterministic | yes | yes |" in text
    # llc.descent's job at one checkpoint is timed beside the chains
    assert re.search(r"\| small_cnn w\d+ \| descent: one full-batch path, no noise "
                     r"\(llc.descent\) \| \d+ \| [\d.]+ \|", text)
    assert re.search(r"\| small_cnn w\d+ \| stability check: top Hessian eigenvalue and its "
                     r"noise \(llc_sharpness, _sd\) \| \d+ \| [\d.]+ \|", text)
    assert (tmp_path / "gpu.json").exists()


def test_bench_gpu_counts_the_steps_it_times_and_measures_lambda_hat_in_eval_mode():
    """A timing window longer than an epoch's full batches used to be cut short while the
    rate still counted every step asked for (small_cnn at batch 512 on a GPU: 2× too fast);
    the λ̂ case was left in train mode, so devinterp's forward pass rewrote BatchNorm's
    running statistics under the λ̂ rows measured after it."""
    from dataclasses import replace

    bench_gpu = bench_module("bench_gpu")
    cpu = torch.device("cpu")
    sizes = replace(bench_gpu.SMOKE, window_s=1.0, max_window=200)
    s = bench_gpu.setup_for("small_cnn", 2, sizes, cpu, {})
    loop = bench_gpu.ProjectLoop(Trainer(s.cfg, s.data, 8, 0, cpu), cpu)
    assert bench_gpu.window_steps(loop, sizes) == loop.full - 2
    with pytest.raises(ValueError, match="does not fit one epoch"):
        loop.window(loop.full - 1)
    net, _ = bench_gpu.llc_case("all_cnn_c", 4, bench_gpu.SMOKE, cpu, {})
    assert not any(m.training for m in net.modules())


def test_a_failing_dataloader_loop_costs_only_its_own_column():
    """The DataLoader loop (worker processes, pinned memory: never run here) is measured in
    the same windows as the project's; when it fails, its rate is NaN with the reason, and
    the project's rates stand."""
    import math
    from dataclasses import replace

    bench_gpu = bench_module("bench_gpu")
    cpu = torch.device("cpu")
    sizes = replace(bench_gpu.SMOKE, repeats=2)
    s = bench_gpu.setup_for("small_cnn", 2, sizes, cpu, {})

    class Dies(bench_gpu.BareLoop):
        def step(self) -> None:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Bus error.")

    loops = {"ours": bench_gpu.ProjectLoop(Trainer(s.cfg, s.data, 8, 0, cpu), cpu),
             "loader": bench_gpu.Fallible(Dies, s, 8, cpu)}
    rates = bench_gpu.interleaved(loops, sizes)
    assert all(math.isnan(r) for r in rates["loader"]) and len(rates["loader"]) == 2
    assert all(r > 0 for r in rates["ours"])
    assert loops["loader"].error.startswith("RuntimeError: DataLoader worker (pid 7)")
    assert bench_gpu.Fallible(lambda: 1 / 0).error.startswith("ZeroDivisionError")

    def silent() -> None:
        raise RuntimeError()  # no message: the cell still says what failed

    assert bench_gpu.Fallible(silent).error == "RuntimeError: "


def test_bench_gpu_interpolates_a_rate_between_measured_batch_sizes():
    bench_gpu = bench_module("bench_gpu")
    rates = {32: 10.0, 128: 40.0, 512: 80.0}
    assert bench_gpu.rate_at(64, rates) == pytest.approx(20.0)  # halfway in log batch
    assert bench_gpu.rate_at(128, rates) == 40.0
    assert bench_gpu.rate_at(1024, rates) == 80.0 and bench_gpu.rate_at(8, rates) == 10.0


def test_bench_gpu_says_when_compile_fell_back_to_eager_and_refuses_a_full_run_on_cpu():
    """A "graphed + compile" rate measured after torch.compile failed is the eager model's:
    the table says so. The full sizes without a GPU would spend the budget on the CPU."""
    from types import SimpleNamespace

    from critperiods.train.training import _CompiledOrEager

    bench_gpu = bench_module("bench_gpu")
    forward = _CompiledOrEager(torch.nn.Linear(2, 2))
    assert bench_gpu._captured(SimpleNamespace(forward=forward, graphs=None)) == "n/a"
    forward.forward, forward.checked = forward.model, True  # what a failed compile leaves
    assert "torch.compile failed" in bench_gpu._captured(
        SimpleNamespace(forward=forward, graphs=None))
    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), "--out",
                               "/nonexistent"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "no CUDA device" in proc.stderr


DEVINTERP_STUB = """
import itertools, math

def estimate_learning_coeff_with_summary(model, loader, evaluate, sampling_method,
                                         optimizer_kwargs, num_chains, num_draws,
                                         num_burnin_steps, num_steps_bw_draws, init_loss,
                                         device, online, verbose):
    # as devinterp 1.3.2: the default nbeta is computed from loader.batch_size even when
    # nbeta is passed
    optimizer_kwargs.setdefault("nbeta", loader.batch_size / math.log(loader.batch_size))
    assert init_loss > 0
    for _ in range(num_chains):
        batches = itertools.islice(itertools.cycle(loader), num_burnin_steps + num_draws)
        for x, y in batches:
            assert x.shape[0] == y.shape[0] == loader.batch_size
            evaluate(model, (x, y)).backward()
    return {"llc/mean": 0.0}
"""


def test_bench_gpu_calls_devinterp_132_the_way_it_reads_its_loader(tmp_path):
    """devinterp 1.3.2 reads ``loader.batch_size`` (the first GPU run's TypeError); a stub
    with its calling contract stands in for it, so no install is needed."""
    pkg = tmp_path / "stub" / "devinterp"
    for sub in ("optim", "slt"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "optim" / "sgld.py").write_text("SGLD = object\n")
    (pkg / "slt" / "sampler.py").write_text(DEVINTERP_STUB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), str(ROOT)])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), "--smoke",
                           "--device", "cpu", "--sections", "llc", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in (tmp_path / "gpu.md").read_text().splitlines()
            if "devinterp 1.3.2 |" in line]
    assert len(rows) == 2 and not any("failed" in row for row in rows), rows


# ------------------------------------------------------------------ on a GPU only

@cuda
@pytest.mark.filterwarnings("error:CUDA graph capture")  # an eager fallback would pass too
@pytest.mark.parametrize("model", ["small_cnn", "all_cnn_c"])
def test_cuda_graphed_branch_from_trunk_equals_run_from_scratch(tmp_path, cfg, data, model):
    from critperiods.pipeline.checkpoints import load_piece
    from critperiods.pipeline.trajectories import PieceSpec, train_piece

    gpu = torch.device("cuda")
    cfg, data = replace(cfg, model=model), data.to(gpu)
    fast = FastPath.for_device(gpu, deterministic=True, model=model)
    assert fast.cuda_graphs
    prev = None
    for e in (0, 1, 2):
        out = tmp_path / f"t{e}.pt"
        train_piece(PieceSpec(16, (3,), ALWAYS_BLURRED, e, frozenset()), cfg, HASH, data, prev,
                    out, gpu, progress=False, fast=fast)
        prev = out
    train_piece(PieceSpec(16, (3,), 2, 4, frozenset()), cfg, HASH, data, prev, tmp_path / "b.pt",
              gpu, progress=False, fast=fast)
    scratch = Trainer(cfg, data, 16, 3, gpu, fast)
    train_until(scratch, 4, 2, set(), [[]], HASH, progress=False)
    assert_state_equal(load_piece(tmp_path / "b.pt", HASH)["members"][0]["state"],
                       scratch.state())
    # the first steps follow the eager loop (later, TF32 rounding and SGD amplify the
    # update's last-bit difference from torch.optim.SGD's, as between any two kernels)
    pair = [Trainer(cfg, data, 16, 3, gpu, replace(fast, cuda_graphs=graphs))
            for graphs in (False, True)]
    for t in pair:
        assert t.train_epoch(ALWAYS_BLURRED, stop_after(4)) is None  # eager, capture, 2 replays
    assert pair[1].graphs.graphs and all(g is not None for g in pair[1].graphs.graphs.values())
    assert max_diff(pair[0].state()["model"], pair[1].state()["model"]) < 1e-2


@cuda
@pytest.mark.filterwarnings("error:CUDA graph capture")  # an eager fallback would pass too
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cuda_graphed_sgld_matches_the_eager_sampler(precision, monkeypatch):
    from critperiods.measure import llc
    from critperiods.measure.llc import sampler
    from critperiods.train import cuda_graphs

    captured = []
    capture = cuda_graphs._capture_record

    def spy(*args, **kwargs):
        captured.append(capture(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(cuda_graphs, "_capture_record", spy)

    torch.manual_seed(0)
    model = build_model("small_cnn", 4, 1, 8, 10, 0).cuda()
    data = (torch.randn(256, 1, 8, 8, device="cuda"), torch.randint(10, (256,), device="cuda"))
    cfg = llc.LLCConfig(chains=3, draws=20, burn_in=5, step_size=1e-5, batch_size=32,
                        precision=precision)
    graphed = llc.estimate_llc(model, torch.nn.functional.cross_entropy, data, cfg,
                               progress=False)
    sampler.SGLD_CUDA_GRAPHS = False
    try:
        eager = llc.estimate_llc(model, torch.nn.functional.cross_entropy, data, cfg,
                                 progress=False)
    finally:
        sampler.SGLD_CUDA_GRAPHS = True
    tol = 1e-4 if precision == "float32" else 1e-3
    for trace in ("loss_trace", "distance_trace"):
        assert torch.allclose(torch.tensor(getattr(graphed, trace)),
                              torch.tensor(getattr(eager, trace)), rtol=tol, atol=tol / 10)
    assert captured and all(g is not None for g in captured)  # the graphed run was graphed


def test_a_compile_that_fails_at_its_first_call_falls_back_to_eager(cfg, data, monkeypatch):
    """torch.compile is lazy: a backend failure shows at the first forward, which is where
    ``train.compile`` must fall back (with a warning) instead of killing the job."""
    def broken_compile(model):
        def forward(x):
            raise RuntimeError("backend compiler failed")
        return forward

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = Trainer(cfg, data, 32, 0)
    compiled = Trainer(cfg, data, 32, 0, fast=FastPath(compile=True))
    with pytest.warns(UserWarning, match="torch.compile failed .*training eagerly"):
        compiled.train_epoch(1)
    eager.train_epoch(1)
    assert_state_equal(compiled.state(), eager.state())


class _Stream:
    """torch.cuda.Stream on the CPU: nothing to order."""

    def __init__(self, device=None) -> None:
        self.device = device

    def wait_stream(self, other) -> None:
        pass


@pytest.fixture
def emulated_sgld_capture(monkeypatch):
    """An SGLD record's CUDA graph capture emulated on the CPU: the "captured" record runs
    eagerly and everything it changed (chain state, the trace's tensors, the generators) is
    put back, as a real capture records without running; a replay runs the record. With
    ``fail=True`` the capture advances the registered generators, then raises, as a capture
    CUDA invalidates halfway does."""
    import contextlib

    from critperiods.train import cuda_graphs

    mode = {"fail": False, "captured": 0}

    class Graph:
        def __init__(self) -> None:
            self.record, self.generators = None, []

        def register_generator_state(self, gen) -> None:
            self.generators.append(gen)

        def replay(self) -> None:
            self.record()

    real_capture = cuda_graphs._capture_record

    def capture(record, sampler, stream):
        mode.update(record=record, sampler=sampler)
        return real_capture(record, sampler, stream)

    @contextlib.contextmanager
    def graph(g, **_):
        if g.record is None and not g.generators:  # _after_failed_capture's trivial one
            yield
            return
        if mode["fail"]:
            for gen in g.generators:
                torch.rand(3, generator=gen)  # offsets taken by the half capture
            raise RuntimeError("operation not permitted when stream is capturing")
        st, sampler, record = mode["st"], mode["sampler"], mode["record"]
        tensors = [st.w, st.healthy, st.grad, *([st.v] if st.v is not None else []),
                   sampler._idx, sampler._noise, sampler._buf,
                   *(c.cell_contents for c in record.__closure__
                     if isinstance(c.cell_contents, torch.Tensor))]
        saved = [t.clone() for t in tensors]
        states = [gen.get_state() for gen in sampler.gens]
        yield
        for t, s in zip(tensors, saved, strict=True):
            t.copy_(s)
        for gen, s in zip(sampler.gens, states, strict=True):
            gen.set_state(s)
        g.record = record
        mode["captured"] += 1

    monkeypatch.setattr(cuda_graphs, "_capture_record", capture)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    return mode


def _sgld_run(mode: dict | None, sampler_name: str, loss_every: int, step_size: float):
    """Three SGLD chains at a small CNN: graphed (``mode`` given: the emulated capture) or
    the eager sampler; the trace arrays, the records notified and the generators used."""
    import torch.nn.functional as F

    from critperiods.measure.llc import sampler as S
    from critperiods.train import cuda_graphs

    model = build_model("small_cnn", 4, 1, 8, 10, 0).eval()
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(10, (64,), generator=torch.Generator().manual_seed(2))
    cfg = S.LLCConfig(chains=3, draws=6, burn_in=2, step_size=step_size, batch_size=16,
                      loss_every=loss_every, sampler=sampler_name)
    st = S._init_chains(model, 3, cfg.sampler)
    st.all_healthy = None  # what a CUDA device sets
    gens = [torch.Generator().manual_seed(S.chain_seed(0, c)) for c in range(3)]
    smp = S._Sampler(S._chain_losses_fn(model, F.cross_entropy, 3), (x, y), cfg, 50.0, gens)
    seen = []

    def notify(index, losses) -> None:
        seen.append((index, losses.clone()))

    if mode is None:
        out = S._run_chains(smp, st, lambda k: None, notify)
    else:
        mode["st"] = st
        out = S._trace(*cuda_graphs.run_chains_graphed(smp, st, lambda k: None, notify))
    return (out.loss, out.peak, out.healthy, out.distance), seen, smp.gens


@pytest.mark.parametrize("sampler_name", ["sgld", "rmsprop_sgld"])
@pytest.mark.parametrize(("loss_every", "step_size"), [(1, 1e-3), (3, 1e-3), (1, 5.0)])
def test_graphed_sgld_records_equal_the_eager_sampler(emulated_sgld_capture, sampler_name,
                                                      loss_every, step_size):
    """The graphed λ̂ path (two eager records, then a captured record replayed) traces the
    same losses, peaks, health and distances from w* as the eager sampler, bit for bit, and
    notifies the same records; at step 5.0 the chains diverge and the NaNs fall where the
    eager ones do."""
    graphed, seen, _ = _sgld_run(emulated_sgld_capture, sampler_name, loss_every, step_size)
    eager, seen_eager, _ = _sgld_run(None, sampler_name, loss_every, step_size)
    assert emulated_sgld_capture["captured"] == 1
    for a, b in zip(graphed, eager, strict=True):
        assert a.tobytes() == b.tobytes()
    loss, _, _, distance = graphed
    np.testing.assert_array_equal(np.isnan(distance), np.isnan(loss))  # cut where it is
    if sampler_name == "sgld":  # RMSProp's preconditioner keeps step 5.0 finite
        assert np.isnan(loss).any() == (step_size == 5.0)
    assert [i for i, _ in seen] == [i for i, _ in seen_eager] == list(range(8))
    assert all(torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
               for (_, a), (_, b) in zip(seen, seen_eager, strict=True))


def test_a_failed_sgld_capture_samples_on_as_if_never_tried(emulated_sgld_capture):
    """A capture that fails halfway has advanced the registered generators (and, on torch ≤
    2.11, left them in capture mode): the chains go on eagerly from fresh generators in the
    states the capture began with, so the estimate equals the eager sampler's."""
    emulated_sgld_capture["fail"] = True
    with pytest.warns(UserWarning, match="capture of an SGLD record failed"):
        graphed, _, gens = _sgld_run(emulated_sgld_capture, "sgld", 1, 1e-3)
    eager, _, eager_gens = _sgld_run(None, "sgld", 1, 1e-3)
    assert emulated_sgld_capture["captured"] == 0
    for a, b in zip(graphed, eager, strict=True):
        assert a.tobytes() == b.tobytes()
    assert all(torch.equal(a.get_state(), b.get_state())
               for a, b in zip(gens, eager_gens, strict=True))


@cuda
def test_the_stability_check_on_cuda_repeats_bit_for_bit_and_agrees_with_the_cpu():
    """λ̂'s stability check (the top Hessian eigenvalue and its minibatches' noise) runs on
    the GPU with the float32 chains' numerics: the same seed gives the same bits, and the
    values are the CPU's to Lanczos' tolerance; cuDNN's settings are put back."""
    from critperiods.measure.llc.stability import sharpness
    from critperiods.train.memory_format import to_channels_last
    from critperiods.train.models import build_model

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    model = to_channels_last(build_model("small_cnn", 8, 1, 28, 10, seed=0))  # as the stage
    loss = torch.nn.functional.cross_entropy
    on_cpu = sharpness(model, loss, (x, y), samples=256, batch_size=32)
    benchmark = torch.backends.cudnn.benchmark
    gpu = model.to("cuda")
    data = (x.to("cuda"), y.to("cuda"))
    first = sharpness(gpu, loss, data, samples=256, batch_size=32)
    assert first == sharpness(gpu, loss, data, samples=256, batch_size=32)
    assert first.top == pytest.approx(on_cpu.top, rel=2e-2)
    assert first.spread == pytest.approx(on_cpu.spread, rel=5e-2)  # the same minibatches
    assert torch.backends.cudnn.benchmark == benchmark
