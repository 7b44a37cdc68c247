"""Tests of experiments/screen.py: the screening plan, the choice it freezes, the held-out plan."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments.screen import Args, choose, main, plan_heldout, plan_stage1, plan_stage2, sample_trials
from experiments.sweep import SEARCH_SPACE

TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")


def test_trials_are_seeded_distinct_and_inside_the_ranges():
    params = ("learning_rate", "alpha", "env_reward_scale", "buffer_gamma")
    trials = sample_trials(params, 16, seed=0)
    assert trials == sample_trials(params, 16, seed=0) != sample_trials(params, 16, seed=1)
    assert len({tuple(t.items()) for t in trials}) == 16
    for trial in trials:
        assert all(trial[p] in SEARCH_SPACE[p][0] for p in params)
    assert len(sample_trials(("buffer_gamma",), 5, seed=0)) == 2  # only two settings exist


def test_stage1_runs_every_trial_on_every_task_and_ppo_rates_on_two_seeds(tmp_path):
    runs = plan_stage1(Args(results_dir=str(tmp_path)))
    gasil = [r for r in runs if r.agent == "ppo_gasil"]
    ppo = [r for r in runs if r.agent == "ppo"]
    assert len(gasil) == 16 * 3 and {r.seed for r in gasil} == {1} and {r.task for r in gasil} == set(TASKS)
    assert [r.task for r in gasil[:3]] == list(TASKS)  # trial by trial: a cut campaign covers all tasks
    assert len(ppo) == 4 * 3 * 2 and {r.setting for r in ppo} == {
        "delayed20+lr0.0003", "delayed20+lr0.0001", "delayed20+lr5e-05", "delayed20+lr3e-05"}
    assert all(r.total_timesteps == 500_000 and "delayed20" in r.setting for r in runs)


def frame(values: dict[tuple[str, str, str, int], float]) -> pd.DataFrame:
    return pd.DataFrame([{"agent": a, "task": t, "setting": s, "seed": seed, "objective": v, "episodes": 20}
                         for (a, t, s, seed), v in values.items()])


def test_candidates_and_choice_by_hand():
    args = Args(top=1)
    seed1 = {  # setting A best on Hopper, B on Walker2d and HalfCheetah; C best geometric mean
        ("ppo_gasil", "Hopper-v5", "A", 1): 3000, ("ppo_gasil", "Walker2d-v5", "A", 1): 10,
        ("ppo_gasil", "HalfCheetah-v5", "A", 1): 10,
        ("ppo_gasil", "Hopper-v5", "B", 1): 100, ("ppo_gasil", "Walker2d-v5", "B", 1): 3000,
        ("ppo_gasil", "HalfCheetah-v5", "B", 1): 3000,
        ("ppo_gasil", "Hopper-v5", "C", 1): 1000, ("ppo_gasil", "Walker2d-v5", "C", 1): 2000,
        ("ppo_gasil", "HalfCheetah-v5", "C", 1): 2000,
    }
    assert plan_stage2(args, frame(seed1)) == ["A", "B", "C"]
    seed2 = {(a, t, s, 2): v / 2 if s == "A" else v for (a, t, s, _), v in seed1.items()}
    ppo = {("ppo", t, f"delayed20+lr{lr}", seed): v for t in TASKS for seed in (1, 2)
           for lr, v in (("0.0003", 500), ("3e-05", 100))}
    ppo[("ppo", "Hopper-v5", "delayed20+lr3e-05", 1)] = 2000
    choice = choose(args, frame({**seed1, **seed2, **ppo}), ["A", "B", "C"])
    assert choice["per_task"] == {"Hopper-v5": "A", "Walker2d-v5": "B", "HalfCheetah-v5": "B"}
    assert choice["single"] == "C"  # geometric means of the seed 1-2 means: A 50, B 965, C 1587
    assert choice["ppo"]["Hopper-v5"] == "delayed20+lr3e-05"  # mean of seeds 1-2: 1050 > 500
    assert choice["ppo"]["Walker2d-v5"] == "delayed20+lr0.0003"


def test_heldout_uses_only_the_frozen_choice_and_fresh_seeds(tmp_path):
    args = Args(results_dir=str(tmp_path), heldout_dir=str(tmp_path / "heldout"))
    choice = {"single": "delayed20+lr0.0001+alpha0.2+envrewardnormalized",
              "per_task": {"Hopper-v5": "delayed20+lr0.0003", "Walker2d-v5": "x", "HalfCheetah-v5": "y"},
              "ppo": {t: "delayed20+lr0.0003" for t in TASKS}}
    choice["per_task"].update({"Walker2d-v5": choice["single"], "HalfCheetah-v5": choice["single"]})
    plan = plan_heldout(args, choice)
    assert {r.seed for r in plan} == set(range(101, 111))
    count = pd.Series([(r.agent, r.setting) for r in plan]).value_counts().to_dict()
    assert count[("ppo", "delayed20+lr0.0003")] == 30 and count[("ppo_gasil", choice["single"])] == 30
    assert count[("ppo_gasil", "delayed20+lr0.0003")] == 10  # Hopper's own setting differs
    assert count[("ppo_gasil", "lr0.0001+alpha0.2+envrewardnormalized")] == 15  # undelayed check, 101-105
    assert count[("ppo", "plain")] == count[("ppo_sil", "delayed20")] == count[("ppo_bc", "delayed20")] == 15
    assert all(r.total_timesteps == 1_000_000 for r in plan)


def test_heldout_refuses_to_start_before_the_choice_is_frozen(tmp_path):
    with pytest.raises(SystemExit, match="screen.json"):
        main(["--heldout", "--results-dir", str(tmp_path), "--dry-run"])


def test_heldout_ratios_by_hand():
    from experiments.screen import heldout_ratios

    choice = {"single": "S", "ppo": {t: "P" for t in TASKS}}
    table = pd.DataFrame([{"agent": a, "task": t, "setting": s, "mean": v}
                          for t, (p, g) in zip(TASKS, ((1000, 2000), (500, 2000), (2000, 1000)))
                          for a, s, v in (("ppo", "P", p), ("ppo_gasil", "S", g))])
    ratios = heldout_ratios(Args(), table, choice)
    assert ratios["ratio"].tolist()[:3] == [2.0, 4.0, 0.5]
    assert ratios["ratio"].iloc[3] == pytest.approx(4.0 ** (1 / 3))
