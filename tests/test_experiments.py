"""Tests of experiments/: grid expansion, skip and resume, local and Ray execution, figures, sweeps.

The runs are a tiny fake script (written to a temporary algos directory) that takes the flags of the
algos/ scripts and writes a CSV whose returns can be computed by hand: every 100 steps an episode with
true return ``1e4 * learning_rate + 10 * alpha + seed`` (5.0 + 1.0 + seed with the defaults).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import grid, plot, runner, sweep
from experiments.grid import AGENTS, PRESETS, REPO_ROOT, expand_grid, parse_setting, run_state
from experiments.results import DIAGNOSTIC_TAGS, csv_path_for, last_step, load_results, run_diagnostics

FAKE_SCRIPT = r'''
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--env-id", required=True)
p.add_argument("--seed", type=int, required=True)
p.add_argument("--total-timesteps", type=int, required=True)
p.add_argument("--csv-path", required=True)
p.add_argument("--run-name", default="fake")
p.add_argument("--checkpoint-every", type=int, default=0)
p.add_argument("--checkpoint-path")
p.add_argument("--resume")
p.add_argument("--learning-rate", type=float, default=3e-4)
p.add_argument("--stack.alpha", dest="alpha", type=float, default=0.1)
p.add_argument("--stop-after-steps", type=int, default=0)
args, _ = p.parse_known_args()
with open(args.csv_path + ".argv", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
if args.env_id.startswith("Fail"):
    print("fake failure", flush=True)
    sys.exit(3)
partial = args.csv_path + ".partial"
start, rows = 0, []
if args.resume:
    with open(args.resume) as f:
        start = int(f.read())
    if os.path.exists(partial):
        with open(partial) as f:
            rows = [line for line in f.readlines()[1:] if int(line.split(",")[1]) <= start]
ret = 1e4 * args.learning_rate + 10 * args.alpha + args.seed
with open(partial, "w") as f:
    f.write("run,step,true_return\n")
    f.writelines(rows)
    for step in range(start + 100, args.total_timesteps + 1, 100):
        f.write(f"{args.run_name},{step},{ret!r}\n")
        f.flush()
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            os.makedirs(os.path.dirname(args.checkpoint_path), exist_ok=True)
            with open(args.checkpoint_path + ".tmp", "w") as c:
                c.write(str(step))
            os.replace(args.checkpoint_path + ".tmp", args.checkpoint_path)
        if args.stop_after_steps and step >= args.stop_after_steps:
            sys.exit(0)
os.replace(partial, args.csv_path)
print("done", args.run_name)
'''


@pytest.fixture
def fake_algos(tmp_path: Path) -> Path:
    algos = tmp_path / "algos"
    algos.mkdir()
    for spec in AGENTS.values():
        (algos / spec.script).write_text(FAKE_SCRIPT)
    return algos


def fake_return(seed: int, lr: float = 3e-4, alpha: float = 0.1) -> float:
    return 1e4 * lr + 10 * alpha + seed


def invocations(run: grid.Run) -> list[list[str]]:
    path = Path(run.csv_path + ".argv")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flag(argv: list[str] | tuple[str, ...], name: str) -> str:
    argv = list(argv)
    return argv[len(argv) - 1 - argv[::-1].index(name) + 1]  # the last occurrence wins, as in tyro


# --- settings and grid expansion -----------------------------------------------------------------------

def test_parse_setting_canonical_names_and_flags():
    assert parse_setting("plain") == ("plain", ())
    assert parse_setting("delayed") == ("delayed20", ("--stack.delay", "20"))
    assert parse_setting("noise0.10") == ("noise0.1", ("--stack.obs-noise-std", "0.1"))
    assert parse_setting("noise0") == parse_setting("delayed1") == ("plain", ())
    assert parse_setting("buffer500+delayed20")[0] == "delayed20+buffer500"
    assert parse_setting("delayed20+buffer500")[0] == "delayed20+buffer500"
    assert parse_setting("dupdates5") == ("dupdates5", ("--stack.d-updates", "5"))
    assert parse_setting("lr3e-05+dlr0.0001+alpha1")[1] == (
        "--learning-rate", "3e-05", "--stack.d-lr", "0.0001", "--stack.alpha", "1")
    assert parse_setting("truncationbootstrap+delayed20") == (
        "delayed20+truncationbootstrap", ("--stack.delay", "20", "--truncation", "bootstrap"))
    assert parse_setting("delayed20+truncationend")[0] == "delayed20"  # the default adds nothing
    for bad in ("delayedX", "wind3", "noise0.1+noise0.2", "truncationmaybe"):
        with pytest.raises(ValueError):
            parse_setting(bad)


def test_expand_grid_counts_order_and_dedupe(tmp_path):
    runs = expand_grid(agents=list(AGENTS), tasks=grid.TASKS,
                       settings=["plain", "delayed20", "delayed", "noise0.05", "noise0.1", "noise0.5"],
                       seeds=[1, 2, 1], total_timesteps=1000, results_dir=tmp_path)
    assert len(runs) == 4 * 3 * 5 * 2 == len({r.name for r in runs})
    assert [r.seed for r in runs] == [1] * 60 + [2] * 60  # seed outermost
    assert {r.setting for r in runs} == {"plain", "delayed20", "noise0.05", "noise0.1", "noise0.5"}
    assert {len({r.csv_path for r in runs}), len({r.log_path for r in runs}),
            len({r.checkpoint_path for r in runs})} == {120}


def test_preset_sizes():
    def count(name: str, seeds: int = 3) -> int:
        args = runner.Args(preset=name, seeds=tuple(range(1, seeds + 1)), results_dir="/tmp/x")
        return len(runner.build_runs(args)[0])

    assert count("fig4") == count("fig6") == 4 * 3 * 3
    assert count("fig5") == 2 * 4 * 3
    assert count("fig7") == 7 * 3  # plain stands for buffer1000 and dupdates20
    # Shared runs (plain Walker2d PPO/PPO+GASIL) run once in the whole campaign.
    assert count("paper") == 36 + 36 + (24 - 6) + (21 - 3)
    narrowed = runner.build_runs(runner.Args(preset="fig6", tasks=("Hopper-v5",), seeds=(1,)))[0]
    assert len(narrowed) == 4 and {r.setting for r in narrowed} == {"delayed20"}
    # --agents/--settings select among the preset's; --tasks replaces its tasks.
    ppo_only = runner.build_runs(runner.Args(preset="paper", agents=("ppo",), seeds=(1,)))[0]
    assert {r.agent for r in ppo_only} == {"ppo"}
    assert {r.setting for r in ppo_only} == {"plain", "delayed20", "noise0.05", "noise0.1", "noise0.5"}
    noisy = runner.build_runs(runner.Args(preset="paper", settings=("noise0.10",), seeds=(1,)))[0]
    assert {(r.agent, r.task, r.setting) for r in noisy} == {
        ("ppo", "Walker2d-v5", "noise0.1"), ("ppo_gasil", "Walker2d-v5", "noise0.1")}
    more = runner.build_runs(runner.Args(preset="fig4", tasks=("Ant-v5",), seeds=(1,)))[0]
    assert {r.task for r in more} == {"Ant-v5"} and len(more) == 4
    custom = runner.build_runs(runner.Args(agents=("ppo_bc",), settings=("delayed",), seeds=(1, 2)))[0]
    assert len(custom) == 2 * 3 and {r.setting for r in custom} == {"delayed20"}
    assert runner.build_runs(runner.Args(preset="fig6", seeds=(1,)))[1] == "results/1M-steps"


@pytest.mark.parametrize("agent", list(AGENTS))
@pytest.mark.parametrize("setting", ["plain", "delayed20", "noise0.05", "noise0.1", "noise0.5"])
def test_argv_for_each_agent_and_setting(tmp_path, agent, setting):
    (run,) = expand_grid(agents=[agent], tasks=["Walker2d-v5"], settings=[setting], seeds=[7],
                         total_timesteps=5000, results_dir=tmp_path, checkpoint_every=1000)
    argv = run.argv()
    assert argv[0] == f"algos/{AGENTS[agent].script}"
    assert flag(argv, "--env-id") == "Walker2d-v5" and flag(argv, "--seed") == "7"
    assert flag(argv, "--total-timesteps") == "5000" and flag(argv, "--torch-threads") == "1"
    assert flag(argv, "--track") == "False" and flag(argv, "--run-name") == run.name
    assert flag(argv, "--csv-path") == run.csv_path
    assert run.csv_path == str(csv_path_for(tmp_path, "Walker2d-v5", setting, agent, 7))
    assert flag(argv, "--checkpoint-every") == "1000"
    assert flag(argv, "--checkpoint-path") == run.checkpoint_path
    assert ("--stack.gasil" in argv) == (agent == "ppo_gasil")
    if agent == "ppo_gasil":
        assert flag(argv, "--stack.gasil") == "True"
    assert ("--stack.delay" in argv) == (setting == "delayed20")
    if setting == "delayed20":
        assert flag(argv, "--stack.delay") == "20"
    if setting.startswith("noise"):
        assert flag(argv, "--stack.obs-noise-std") == setting[len("noise"):]
    else:
        assert "--stack.obs-noise-std" not in argv
    assert "--resume" not in argv


def test_setting_and_script_args_come_last(tmp_path):
    (run,) = expand_grid(agents=["ppo_gasil"], tasks=["Humanoid-v5"], settings=["alpha0.2"], seeds=[1],
                         total_timesteps=100, results_dir=tmp_path, checkpoint_every=0,
                         script_args=["--num-envs", "2"])
    argv = run.argv()
    assert flag(argv, "--stack.alpha") == "0.2"  # the setting wins over the paper's Humanoid alpha
    assert flag(argv, "--stack.alpha-start") == "2000000"
    assert argv[-2:] == ["--num-envs", "2"]
    assert "--checkpoint-every" not in argv and run.checkpoint_path is None


@pytest.mark.parametrize("agent", list(AGENTS))
def test_argv_parses_with_the_real_script(tmp_path, monkeypatch, agent):
    """The flags the runner passes exist in the algos/ script (checked with its own tyro Args)."""
    script = REPO_ROOT / "algos" / AGENTS[agent].script
    if not script.exists():
        pytest.skip(f"{script.name} does not exist yet")
    spec = importlib.util.spec_from_file_location(f"_algo_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # tyro reads the docstrings from the source
    spec.loader.exec_module(module)
    import tyro

    (run,) = expand_grid(agents=[agent], tasks=["Hopper-v5"],
                         settings=["delayed20+noise0.1+buffer500+lr1e-4"],
                         seeds=[3], total_timesteps=4096, results_dir=tmp_path, checkpoint_every=2048)
    parsed = tyro.cli(module.Args, args=run.argv(resume=True)[1:], config=(tyro.conf.FlagConversionOff,))
    assert (parsed.env_id, parsed.seed, parsed.total_timesteps) == ("Hopper-v5", 3, 4096)
    assert parsed.csv_path == run.csv_path and parsed.resume == run.checkpoint_path
    assert parsed.torch_threads == 1 and parsed.learning_rate == 1e-4
    assert (parsed.stack.delay, parsed.stack.obs_noise_std, parsed.stack.buffer_steps) == (20, 0.1, 500)
    assert parsed.stack.gasil == (agent == "ppo_gasil")


# --- skip and resume -----------------------------------------------------------------------------------

def test_run_state_skip_and_resume_argv(tmp_path, fake_algos):
    done, resumable, new = expand_grid(agents=["ppo"], tasks=["T-v0"], settings=["plain"], seeds=[1, 2, 3],
                                       total_timesteps=300, results_dir=tmp_path, algos_dir=fake_algos,
                                       checkpoint_every=100)
    Path(done.csv_path).parent.mkdir(parents=True)
    Path(done.csv_path).write_text("run,step,true_return\nx,100,1.0\n")
    Path(resumable.checkpoint_path).parent.mkdir(parents=True)
    Path(resumable.checkpoint_path).write_text("200")
    assert [run_state(r) for r in (done, resumable, new)] == ["done", "resume", "new"]
    assert resumable.argv(resume=True)[-2:] == ["--resume", resumable.checkpoint_path]

    results = runner.run_all([done, resumable, new], jobs=2, progress=False, poll_seconds=0.05)
    assert sorted(r.name for r in results) == sorted([resumable.name, new.name])
    assert all(r.ok for r in results)
    assert invocations(done) == []  # skipped
    assert "--resume" not in invocations(new)[0]
    assert flag(invocations(resumable)[0], "--resume") == resumable.checkpoint_path
    # The resumed run continued after the checkpoint's step, and its checkpoint is gone.
    assert list(pd.read_csv(resumable.csv_path)["step"]) == [300]
    assert not os.path.exists(resumable.checkpoint_path)
    assert runner.run_all([done, resumable, new], progress=False) == []  # all done now


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, fake_algos):
    def runs(extra):
        return expand_grid(agents=["ppo_gasil"], tasks=["T-v0"], settings=["delayed20"], seeds=[4],
                           total_timesteps=500, results_dir=tmp_path, algos_dir=fake_algos,
                           checkpoint_every=200, script_args=extra)

    (first,) = runs(["--stop-after-steps", "300"])  # stops as if killed after step 300
    (result,) = runner.run_all([first], progress=False, poll_seconds=0.05)
    assert not result.ok and "stopped before the end" in result.error
    assert run_state(first) == "resume" and Path(first.checkpoint_path).read_text() == "200"
    assert last_step(first.partial_path) == 300

    (again,) = runs([])
    (result,) = runner.run_all([again], progress=False, poll_seconds=0.05)
    assert result.ok and result.resumed
    assert list(pd.read_csv(again.csv_path)["step"]) == [100, 200, 300, 400, 500]
    assert "--resume" in invocations(again)[-1]
    log = Path(again.log_path).read_text()
    assert log.count("# ") >= 4 and "resume:" in log  # both attempts logged, in one file


# --- local execution and the CLI -----------------------------------------------------------------------

def test_local_execution_and_loader(tmp_path, fake_algos):
    runs = expand_grid(agents=["ppo", "ppo_gasil"], tasks=["T-v0", "Fail-v0", "gasil_wrappers:PointMass-v0"],
                       settings=["plain"], seeds=[1, 2], total_timesteps=400, results_dir=tmp_path / "res",
                       algos_dir=fake_algos)
    results = runner.run_all(runs, jobs=2, progress=False, poll_seconds=0.05)
    assert len(results) == 12
    failed = sorted(r.name for r in results if not r.ok)
    assert failed == sorted(r.name for r in runs if r.task == "Fail-v0")
    for run in runs:
        env = json.loads(Path(run.csv_path + ".argv").read_text().splitlines()[0])
        assert flag(env, "--torch-threads") == "1"
        assert os.path.exists(run.log_path)
    assert "fake failure" in Path(next(r for r in runs if r.task == "Fail-v0").log_path).read_text()

    df = load_results(tmp_path / "res")
    assert list(df.columns) == ["agent", "task", "setting", "seed", "step", "true_return", "length"]
    assert len(df) == 2 * 2 * 2 * 4
    assert set(df["task"]) == {"T-v0", "gasil_wrappers:PointMass-v0"}  # the quoted path maps back
    assert set(df["agent"]) == {"ppo", "ppo_gasil"} and set(df["setting"]) == {"plain"}
    for (seed,), group in df.groupby(["seed"]):
        assert np.allclose(group["true_return"], fake_return(seed))
    one = df[(df.seed == 1) & (df.agent == "ppo") & (df.task == "T-v0")]
    assert list(one["step"]) == [100, 200, 300, 400]
    # the fake script writes the old run,step,true_return: no lengths, unless a manifest says one env
    assert one["length"].isna().all()
    runner.write_manifest(tmp_path / "res", runs)
    df = load_results(tmp_path / "res")
    assert list(df[(df.seed == 1) & (df.agent == "ppo") & (df.task == "T-v0")]["length"]) == [100.0] * 4


def test_runs_get_one_thread(tmp_path, fake_algos):
    (algos := fake_algos / "ppo.py").write_text(
        "import json, os, sys\n"
        "i = sys.argv.index('--csv-path')\n"
        "path = sys.argv[i + 1]\n"
        "open(path, 'w').write('run,step,true_return\\nx,1,' + os.environ['OMP_NUM_THREADS'] + '\\n')\n")
    runs = expand_grid(agents=["ppo"], tasks=["T-v0"], settings=["plain"], seeds=[1], total_timesteps=1,
                       results_dir=tmp_path, algos_dir=algos.parent)
    assert runner.run_all(runs, progress=False)[0].ok
    assert load_results(tmp_path)["true_return"].tolist() == [1.0]


def test_cli_main(tmp_path, fake_algos, capsys):
    common = ["--agents", "ppo", "ppo_bc", "--tasks", "T-v0", "--settings", "plain", "noise0.1",
              "--seeds", "1", "2", "--total-timesteps", "300", "--results-dir", str(tmp_path),
              "--algos-dir", str(fake_algos), "--jobs", "2", "--poll-seconds", "0.05"]
    assert runner.main([*common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 runs: 0 done (skipped), 0 to resume, 8 new" in out and "--stack.obs-noise-std 0.1" in out
    assert not (tmp_path / "manifest.csv").exists()

    assert runner.main(common) == 0
    with open(tmp_path / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == 8 and {m["agent"] for m in manifest} == {"ppo", "ppo_bc"}
    assert all(shlex.split(m["command"])[1].endswith(".py") for m in manifest)
    capsys.readouterr()
    assert runner.main(common) == 0  # everything is there: all skipped
    assert "8 done (skipped)" in capsys.readouterr().out

    assert runner.main([*common[:-6], "--algos-dir", str(fake_algos), "--tasks", "Fail-v0"]) == 1
    assert "FAILED" in capsys.readouterr().err


# --- Ray -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    try:
        runner.init_ray(None, num_cpus=2)
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"Ray cannot start a local instance here: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


def test_ray_local_execution(tmp_path, fake_algos, ray_local):
    runs = expand_grid(agents=["ppo", "ppo_sil"], tasks=["T-v0", "Fail-v0"], settings=["plain"], seeds=[5],
                       total_timesteps=200, results_dir=tmp_path, algos_dir=fake_algos, checkpoint_every=100)
    results = runner.run_all(runs, use_ray=True, progress=False, poll_seconds=0.1)
    assert sorted(r.name for r in results if r.ok) == sorted(r.name for r in runs if r.task == "T-v0")
    assert all("exit status 3" in r.error for r in results if not r.ok)
    df = load_results(tmp_path)
    assert len(df) == 4 and np.allclose(df["true_return"], fake_return(5))
    assert not any(os.path.exists(r.checkpoint_path) for r in runs if r.task == "T-v0")


def test_sweep_smoke(tmp_path, fake_algos, ray_local):
    args = sweep.Args(agent="ppo_gasil", task="T-v0", setting="delayed20", params=("learning_rate", "alpha"),
                      num_samples=2, seeds=(1, 2), total_timesteps=300, last_n=2, results_dir=str(tmp_path),
                      algos_dir=str(fake_algos), jobs=2, checkpoint_every=0)
    table = sweep.sweep(args, verbose=0)
    assert len(table) == 2 and "error" not in table.columns
    for _, row in table.iterrows():
        assert row["learning_rate"] in sweep.SEARCH_SPACE["learning_rate"][0]
        assert row["alpha"] in sweep.SEARCH_SPACE["alpha"][0]
        expected = np.mean([fake_return(s, row["learning_rate"], row["alpha"]) for s in (1, 2)])
        assert row["objective"] == pytest.approx(expected)
        assert row["setting"].startswith("delayed20+lr") and row["episodes"] == 2
    assert list(table["objective"]) == sorted(table["objective"], reverse=True)
    assert (tmp_path / "sweep.csv").exists()
    df = load_results(tmp_path)  # the trials' runs are in the runner's layout
    assert set(df["setting"]) == set(table["setting"]) and set(df["seed"]) == {1, 2}


# --- figures -------------------------------------------------------------------------------------------

def write_run(results_dir: Path, agent: str, task: str, setting: str, seed: int, steps, returns) -> None:
    path = csv_path_for(results_dir, task, setting, agent, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"run": "r", "step": steps, "true_return": returns}).to_csv(path, index=False)


def test_plot_fig6_mean_and_aggregated_csv(tmp_path):
    steps = np.arange(1000, 10001, 1000)
    # Linear in steps, one offset per seed: with no smoothing the mean is step/100 + mean(offsets).
    for seed, offset in ((1, 0.0), (2, 30.0), (3, 90.0)):
        for task in ("Hopper-v5", "Walker2d-v5"):
            write_run(tmp_path, "ppo", task, "delayed20", seed, steps, steps / 100 + offset)
            write_run(tmp_path, "ppo_gasil", task, "delayed20", seed, steps, np.full(10, 100.0 * seed))
    write_run(tmp_path, "ppo", "Hopper-v5", "plain", 1, steps, np.zeros(10))  # another figure's run
    out = tmp_path / "figs" / "fig6.png"
    assert plot.main(["--results-dir", str(tmp_path), "--figure", "fig6", "--out", str(out),
                      "--window", "1", "--grid-points", "10", "--last-n", "3"]) == 0
    assert out.exists() and out.stat().st_size > 10_000
    curves = pd.read_csv(out.with_suffix(".csv"))
    assert set(curves["panel"]) == {"Hopper-v5", "Walker2d-v5"} and set(curves["setting"]) == {"delayed20"}
    ppo = curves[(curves["agent"] == "ppo") & (curves["task"] == "Hopper-v5")]
    assert np.allclose(ppo["step"], steps) and (ppo["n_seeds"] == 3).all()
    assert np.allclose(ppo["mean"], steps / 100 + 40.0)
    gasil = curves[(curves["agent"] == "ppo_gasil") & (curves["task"] == "Walker2d-v5")]
    assert np.allclose(gasil["mean"], 200.0)
    assert ((gasil["lo"] >= 100.0) & (gasil["lo"] <= 200.0)).all()
    assert ((gasil["hi"] >= 200.0) & (gasil["hi"] <= 300.0)).all()
    finals = pd.read_csv(tmp_path / "figs" / "fig6_final.csv")
    row = finals[(finals["agent"] == "ppo") & (finals["task"] == "Hopper-v5")].iloc[0]
    assert row["final_mean"] == pytest.approx(np.mean([80, 90, 100]) + 40.0) and row["n_seeds"] == 3


def test_smoothing_and_grid():
    assert np.allclose(plot.smooth_episodes(np.array([0.0, 2.0, 4.0, 6.0]), 2), [0.0, 1.0, 3.0, 5.0])
    frame = pd.DataFrame({"seed": [1, 1, 1, 2, 2], "step": [0, 10, 20, 5, 15],
                          "true_return": [0.0, 10.0, 20.0, 5.0, 15.0]})
    grid_, curves, seeds = plot.seed_curves(frame, window=1, grid_points=3)
    assert seeds == [1, 2] and np.allclose(grid_, [5, 10, 15])  # only where both seeds have data
    assert np.allclose(curves, [[5, 10, 15], [5, 10, 15]])


def test_bootstrap_band_contains_the_mean():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(5, 50)) * rng.uniform(1, 100, size=50) + rng.uniform(-50, 50, size=50)
    mean, lo, hi = plot.bootstrap_band(values, n_boot=500, rng=np.random.default_rng(0))
    assert np.allclose(mean, values.mean(axis=0))
    assert (lo <= mean).all() and (mean <= hi).all() and (lo < hi).all()
    assert (lo >= values.min(axis=0)).all() and (hi <= values.max(axis=0)).all()
    one = plot.bootstrap_band(values[:1])
    assert all(np.allclose(x, values[0]) for x in one)


def test_plot_fig5_and_fig7_panels(tmp_path):
    steps = np.arange(100, 1001, 100)
    for seed in (1, 2):
        for setting in ("plain", "noise0.05", "noise0.1", "noise0.5"):
            for agent in ("ppo", "ppo_gasil"):
                write_run(tmp_path, agent, "Walker2d-v5", setting, seed, steps, np.full(10, float(seed)))
        for setting in ("buffer500", "buffer2000", "dupdates5"):
            write_run(tmp_path, "ppo_gasil", "Walker2d-v5", setting, seed, steps, np.full(10, 7.0))
    df = load_results(tmp_path)
    curves, _ = plot.draw(df, "fig5", tmp_path / "fig5.png", n_boot=100)
    assert curves["panel"].nunique() == 4 and len(curves.groupby(["panel", "agent"])) == 8
    curves, finals = plot.draw(df, "fig7", tmp_path / "fig7.png", n_boot=100)
    used = dict(zip(finals["panel"].str[:3] + finals["curve"], finals["setting"]))
    assert used == {"(a)500": "buffer500", "(a)1000": "plain", "(a)2000": "buffer2000",
                    "(b)5": "dupdates5", "(b)20": "plain"}
    assert (tmp_path / "fig7.png").exists() and (tmp_path / "fig7.csv").exists()
    with pytest.raises(ValueError, match="no results"):
        plot.draw(df, "fig6", tmp_path / "fig6.png")


def test_fig7_defaults_match_the_stack():
    config = pytest.importorskip("gasil_wrappers.config")
    defaults = config.GASILConfig()
    assert grid.DEFAULT_GASIL == {"buffer": defaults.buffer_steps, "dupdates": defaults.d_updates}
    assert defaults.delay == 1 and defaults.obs_noise_std == 0.0  # `plain` is the unmodified task


def test_runner_runs_as_a_script(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "runner.py"), "--preset", "fig7",
                          "--seeds", "1", "--dry-run", "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "7 runs" in out and "--stack.buffer-steps 500" in out and "--stack.d-updates 10" in out
    assert len(PRESETS["paper"]) == 4


def test_doctests():
    import doctest

    for module in (grid, sweep):
        failures, _ = doctest.testmod(module)
        assert failures == 0, module.__name__


def test_a_run_locked_by_another_runner_is_left_alone(tmp_path, fake_algos):
    import fcntl

    (run,) = expand_grid(agents=["ppo"], tasks=["T-v0"], settings=["plain"], seeds=[1], total_timesteps=100,
                         results_dir=tmp_path, algos_dir=fake_algos)
    os.makedirs(os.path.dirname(run.log_path))
    with open(run.log_path, "a") as other:  # as if another runner were running it
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        (result,) = runner.run_all([run], progress=False)
        # a second runner on the same plan: the held run is the other's, neither done here nor failed
        assert runner.main(["--agents", "ppo", "--tasks", "T-v0", "--settings", "plain", "--seeds", "1",
                            "--total-timesteps", "100", "--results-dir", str(tmp_path)]) == 0
    assert result.elsewhere and not result.ok and not result.failed and invocations(run) == []
    assert runner.run_all([run], progress=False)[0].ok


def test_plot_compare_draws_agents_by_settings_per_task(tmp_path):
    steps = np.arange(100, 1001, 100)
    for task in ("Hopper-v5", "Walker2d-v5"):
        for seed in (1, 2):
            write_run(tmp_path, "ppo", task, "delayed20", seed, steps, np.full(10, 1.0))
            write_run(tmp_path, "ppo_gasil", task, "delayed20", seed, steps, np.full(10, 2.0))
            write_run(tmp_path, "ppo_gasil", task, "delayed20+buffergamma1", seed, steps,
                      np.full(10, 3.0 + seed))
    df = load_results(tmp_path)
    _, finals = plot.draw(df, "compare", tmp_path / "cmp.png", agents=("ppo", "ppo_gasil"),
                          settings=("delayed20", "delayed20+buffergamma1"), n_boot=100)
    means = {(t, c): m for t, c, m in zip(finals["task"], finals["curve"], finals["final_mean"])}
    # three curves with data per task (PPO was not run with buffergamma1), in task order
    assert list(finals["task"].unique()) == ["Hopper-v5", "Walker2d-v5"] and len(means) == 6
    assert means[("Walker2d-v5", "PPO+GASIL, delayed20+buffergamma1")] == 4.5  # seeds 1 and 2: 4 and 5
    assert means[("Hopper-v5", "PPO, delayed20")] == 1.0
    # the same figure from two results directories (--also): the same numbers; a run in both is refused
    other = tmp_path / "other"
    for task in ("Hopper-v5", "Walker2d-v5"):
        for seed in (1, 2):
            write_run(other, "ppo_gasil", task, "delayed20+buffergamma1", seed, steps,
                      np.full(10, 3.0 + seed))
            csv_path_for(tmp_path, task, "delayed20+buffergamma1", "ppo_gasil", seed).unlink()
    argv = ["--results-dir", str(tmp_path), "--also", str(other), "--figure", "compare", "--agents", "ppo",
            "ppo_gasil", "--settings", "delayed20", "delayed20+buffergamma1", "--n-boot", "100",
            "--out", str(tmp_path / "both.png")]
    assert plot.main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "both_final.csv"), finals.reset_index(drop=True),
                                  check_dtype=False)
    write_run(tmp_path, "ppo_gasil", "Hopper-v5", "delayed20+buffergamma1", 1, steps, np.full(10, 4.0))
    assert plot.main(argv) == 1


def test_diagnostics_take_the_late_values_of_the_surviving_log_of_a_resumed_run(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from experiments import diagnostics
    from experiments.results import run_name

    for agent in ("ppo_gasil", "ppo"):
        path = csv_path_for(tmp_path, "Hopper-v5", "delayed20", agent, 1)
        path.parent.mkdir(parents=True)
        returns = np.arange(30.0) if agent == "ppo_gasil" else np.full(30, 7.0)
        frame = pd.DataFrame({"run": "r", "step": np.arange(30) * 100, "true_return": returns})
        frame.to_csv(path, index=False)
    log_dir = tmp_path / "runs" / run_name("Hopper-v5", "delayed20", "ppo_gasil", 1)
    first = SummaryWriter(str(log_dir))  # logged to step 100, then cut; resumed from its checkpoint at 60
    for step in range(0, 101, 10):
        first.add_scalar("gasil/term_share", step / 100, step)
    first.close()
    resumed = SummaryWriter(str(log_dir), purge_step=60)
    for step in range(60, 101, 10):
        resumed.add_scalar("gasil/term_share", 1.0, step)
        resumed.add_scalar("losses/entropy", step, step)
    resumed.close()

    late = run_diagnostics(tmp_path, fraction=0.25, last_n=10).set_index("agent")
    assert late.loc["ppo_gasil", "final_return"] == np.mean(np.arange(20.0, 30.0))
    assert late.loc["ppo_gasil", "term_share"] == 1.0  # steps 80-100, the resumed process's values
    assert late.loc["ppo_gasil", "entropy"] == 90.0
    assert np.isnan(late.loc["ppo_gasil", "d_loss"])  # never logged
    assert late.loc["ppo", "final_return"] == 7.0 and late.loc["ppo"].iloc[5:].isna().all()  # no log at all
    whole = run_diagnostics(tmp_path, fraction=1.0).set_index("agent")
    assert whole.loc["ppo_gasil", "term_share"] == pytest.approx((0 + .1 + .2 + .3 + .4 + .5 + 5 * 1.0) / 11)

    assert diagnostics.main(["--results-dir", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = pd.read_csv(tmp_path / "diagnostics.csv")
    assert written.shape == (2, 5 + len(DIAGNOSTIC_TAGS))
    # the logs do not outlive the machine (git-ignored): rewriting keeps the values the CSV holds
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert diagnostics.main(["--results-dir", str(tmp_path)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "diagnostics.csv"), written)
    assert np.isnan(run_diagnostics(tmp_path).set_index("agent").loc["ppo_gasil", "term_share"])
    with pytest.raises(ValueError, match="fraction"):
        run_diagnostics(tmp_path, fraction=0.0)


def test_windows_show_runs_over_time_with_lengths_from_the_csv_or_the_steps_between_rows(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from experiments import diagnostics
    from experiments.results import run_name, run_windows

    # a new CSV (with length): episodes of 10 steps to step 100, then 100-step ones to step 300
    steps = np.r_[np.arange(10, 101, 10), np.arange(200, 301, 100)]
    new = csv_path_for(tmp_path, "Hopper-v5", "delayed20", "ppo_gasil", 1)
    new.parent.mkdir(parents=True)
    pd.DataFrame({"run": "r", "step": steps, "true_return": steps / 10.0,
                  "length": np.diff(steps, prepend=0)}).to_csv(new, index=False)
    # old CSVs (no length) of a one-env run and of a four-env run, as the manifest records them
    manifest = ["run,agent,task,setting,seed,total_timesteps,csv,command"]
    for agent, flags in (("ppo", "--seed 1"), ("ppo_bc", "--seed 1 --num-envs 4")):
        write_run(tmp_path, agent, "Hopper-v5", "delayed20", 1, [30, 150, 250], [1.0, 2.0, 3.0])
        name = run_name("Hopper-v5", "delayed20", agent, 1)
        manifest.append(f"{name},{agent},Hopper-v5,delayed20,1,300,x,python algos/{agent}.py {flags}")
    (tmp_path / "manifest.csv").write_text("\n".join(manifest) + "\n")
    log = SummaryWriter(str(tmp_path / "runs" / run_name("Hopper-v5", "delayed20", "ppo_gasil", 1)))
    for step in (50, 100, 150, 300):
        log.add_scalar("gasil/d_loss", step / 100, step)
    log.close()

    table = run_windows(tmp_path, window=100).set_index(["agent", "window"])
    assert list(table.loc["ppo_gasil"].index) == ["0-0.1k", "0.1-0.2k", "0.2-0.3k"]
    gasil = table.loc["ppo_gasil"]
    assert list(gasil["episodes"]) == [10, 1, 1]
    assert list(gasil["median_length"]) == [10.0, 100.0, 100.0]
    assert list(gasil["median_return"]) == [5.5, 20.0, 30.0]  # median of 1..10, then 20, 30
    assert list(gasil["d_loss"]) == [0.75, 1.5, 3.0]  # (0.5 + 1.0) / 2: the window is (lo, hi]
    assert gasil["term_share"].isna().all() and table.loc["ppo", "d_loss"].isna().all()
    assert list(table.loc["ppo", "median_length"]) == [30.0, 120.0, 100.0]
    assert table.loc["ppo_bc", "median_length"].isna().all()  # four envs: rows are not one env's episodes
    with pytest.raises(ValueError, match="window"):
        run_windows(tmp_path, window=0)

    assert diagnostics.main(["--results-dir", str(tmp_path), "--window", "100"]) == 0
    written = pd.read_csv(tmp_path / "windows.csv")
    assert len(written) == 9 and list(written["window"][:3]) == ["0-0.1k", "0.1-0.2k", "0.2-0.3k"]
    import shutil

    shutil.rmtree(tmp_path / "runs")  # the logs are gone: rewriting keeps each window's logged values
    assert diagnostics.main(["--results-dir", str(tmp_path), "--window", "100"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "windows.csv"), written)
    assert not (tmp_path / "diagnostics.csv").exists()
    assert "wrote" in capsys.readouterr().out


def test_each_run_log_names_the_commit_of_its_code(tmp_path, fake_algos):
    runs = expand_grid(agents=["ppo"], tasks=["T-v0"], settings=["plain"], seeds=[1], total_timesteps=100,
                       results_dir=tmp_path / "results", algos_dir=fake_algos)
    assert runner.run_all(runs, progress=False)[0].ok
    first = Path(runs[0].log_path).read_text().splitlines()[0]
    assert first.endswith(f"  # code {runner.code_version(str(runner.REPO_ROOT))}")  # a shell comment
    assert runner.code_version(str(tmp_path)) == "unknown"  # not a git checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "a.py").write_text("x = 1\n")
    for argv in (["init", "-q"], ["add", "a.py"], ["commit", "-q", "-m", "a"]):
        subprocess.run([*git, *argv], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    head = head.stdout.strip()
    assert runner.code_version(str(repo)) == head
    (repo / "a.py").write_text("x = 2\n")
    runner.code_version.cache_clear()
    assert runner.code_version(str(repo)) == head + "+dirty"


def test_commands_name_paths_relative_to_their_checkout(tmp_path):
    """A campaign runs code from a frozen worktree and writes into the main checkout's results: both kinds
    of path are recorded relative to their own checkout; a path in no checkout stays as it is."""
    main, frozen = tmp_path / "main", tmp_path / "frozen"
    (main / "results" / "x").mkdir(parents=True)
    (main / ".git").mkdir()
    (frozen / "algos").mkdir(parents=True)
    (frozen / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    loose = tmp_path / "loose" / "seed1.csv"
    argv = [str(frozen / "algos" / "ppo.py"), "--csv-path", str(main / "results" / "x" / "seed1.csv"),
            "--other", str(loose), "--lr", "0.1"]
    assert runner.display_command(argv, frozen) == \
        f"python algos/ppo.py --csv-path results/x/seed1.csv --other {loose} --lr 0.1"


def test_term_at_random_measures_the_term_of_the_setting_the_scripts_build():
    """A blind D (lr 1e-12) stays at its initial output, near 1/2, so α·(−log D) is about α·log 2 per
    step with a small spread; the setting's α and delay reach the stack (α 0.4 doubles the term)."""
    from experiments.term_at_random import stack_config, term_at_random

    config, batch = stack_config("Pendulum-v1", "delayed5+buffer1000+dlr1e-12+alpha0.2")
    assert (config.gasil, config.delay, config.alpha, config.d_lr, batch) == (True, 5, 0.2, 1e-12, 2048)
    small = term_at_random("Pendulum-v1", "delayed5+buffer1000+dlr1e-12+alpha0.2", steps=3000, seed=0)
    large = term_at_random("Pendulum-v1", "delayed5+buffer1000+dlr1e-12+alpha0.4", steps=3000, seed=0)
    assert small["steps_with_d"] == 3000 - 2048 - 256  # one batch, then D applies after its lag
    assert small["term_mean"] == pytest.approx(0.2 * np.log(2), abs=0.03)
    assert small["term_std"] < small["term_mean"] / 3
    assert large["term_mean"] == pytest.approx(2 * small["term_mean"], rel=1e-6)
    assert 0 < small["term_share"] < large["term_share"] < 1


def test_load_script_executes_a_fresh_copy_under_the_name_asked_and_refuses_unknown_scripts():
    from experiments.scripts import load_script

    first, second = load_script("ppo", "ppo_copy_a"), load_script("ppo", "ppo_copy_b")
    assert first is not second and first.Args is not second.Args
    # tyro and dataclasses resolve a class by its module name
    assert first.Args.__module__ == "ppo_copy_a" and sys.modules["ppo_copy_b"] is second
    assert callable(first.train) and first.train is not second.train
    with pytest.raises(FileNotFoundError, match="no script"):
        load_script("not_a_script")
