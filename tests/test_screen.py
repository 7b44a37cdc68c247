"""Tests of experiments/screen.py: the screening plan, the choice it freezes, the held-out plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import runner
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


def test_the_committed_screening_draw_does_not_move_when_the_search_space_grows(tmp_path):
    """results/screen-500k holds the runs of search seed 0's draw: a new searchable dimension (e.g.
    d_reward_form, opt-in) must leave the default plan's settings as they were drawn."""
    runs = plan_stage1(Args(results_dir=str(tmp_path)))
    settings = sorted({r.setting for r in runs if r.agent == "ppo_gasil"})
    assert len(settings) == 16
    assert settings[0] == "delayed20+lr0.0001+buffer1000+dupdates5+dlr0.0001+alpha0.2+buffergamma0.99" \
                          "+envrewardnormalized"  # trial 11
    assert "delayed20+lr0.0003+buffer10000+dupdates1+dlr0.0003+alpha0.2+buffergamma0.99+envrewardnormalized" \
        in settings  # trial 7
    assert not any("dreward" in s for s in settings)


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


def by_hand_results() -> tuple[dict, dict, dict]:
    """Seed-1 and seed-2 objectives of settings A, B, C, and PPO's (agent, task, setting, seed) -> value."""
    seed1 = {  # setting A best on Hopper, B on Walker2d and HalfCheetah; C best geometric mean
        ("ppo_gasil", "Hopper-v5", "A", 1): 3000, ("ppo_gasil", "Walker2d-v5", "A", 1): 10,
        ("ppo_gasil", "HalfCheetah-v5", "A", 1): 10,
        ("ppo_gasil", "Hopper-v5", "B", 1): 100, ("ppo_gasil", "Walker2d-v5", "B", 1): 3000,
        ("ppo_gasil", "HalfCheetah-v5", "B", 1): 3000,
        ("ppo_gasil", "Hopper-v5", "C", 1): 1000, ("ppo_gasil", "Walker2d-v5", "C", 1): 2000,
        ("ppo_gasil", "HalfCheetah-v5", "C", 1): 2000,
    }
    seed2 = {(a, t, s, 2): v / 2 if s == "A" else v for (a, t, s, _), v in seed1.items()}
    ppo = {("ppo", t, f"delayed20+lr{lr}", seed): v for t in TASKS for seed in (1, 2)
           for lr, v in (("0.0003", 500), ("3e-05", 100))}
    ppo[("ppo", "Hopper-v5", "delayed20+lr3e-05", 1)] = 2000
    return seed1, seed2, ppo


def test_candidates_and_choice_by_hand():
    args = Args(top=1)
    seed1, seed2, ppo = by_hand_results()
    assert plan_stage2(args, frame(seed1)) == ["A", "B", "C"]
    choice = choose(args, frame({**seed1, **seed2, **ppo}), ["A", "B", "C"])
    assert choice["per_task"] == {"Hopper-v5": "A", "Walker2d-v5": "B", "HalfCheetah-v5": "B"}
    assert choice["single"] == "C"  # geometric means of the seed 1-2 means: A 50, B 965, C 1587
    assert choice["ppo"]["Hopper-v5"] == "delayed20+lr3e-05"  # mean of seeds 1-2: 1050 > 500
    assert choice["ppo"]["Walker2d-v5"] == "delayed20+lr0.0003"


def test_heldout_refuses_a_choice_written_before_the_screening_finished(tmp_path):
    """--report-only mid-screening writes a screen.json among the candidates that have both seeds only."""
    from experiments.screen import unscreened

    seed1, seed2, ppo = by_hand_results()
    del seed2[("ppo_gasil", "Walker2d-v5", "B", 2)]  # still running
    early = {"candidates": ["A", "B", "C"], **choose(Args(top=1), frame({**seed1, **seed2, **ppo}),
                                                      ["A", "B", "C"])}
    early = json.loads(json.dumps(early))  # as screen.json holds it (NaN where a mean is missing)
    assert early["single"] == "C"  # a choice exists, but B never had its chance on Walker2d
    assert unscreened(early, TASKS) == ["Walker2d-v5 B"]
    (tmp_path / "screen.json").write_text(json.dumps(early))
    with pytest.raises(SystemExit, match=r"before the screening finished \(1 candidate runs.*Walker2d-v5 B"):
        main(["--heldout", "--results-dir", str(tmp_path), "--dry-run"])
    complete = {"candidates": ["A", "B", "C"], **choose(Args(top=1), frame({**seed1, **seed2, **ppo,
                ("ppo_gasil", "Walker2d-v5", "B", 2): 3000}), ["A", "B", "C"])}
    assert unscreened(json.loads(json.dumps(complete)), TASKS) == []


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
    assert count[("ppo_gasil", "delayed20+lr0.0001+dlr1e-12+alpha0.2+envrewardnormalized")] == 30  # blind D
    assert count[("ppo_gasil", "lr0.0001+alpha0.2+envrewardnormalized")] == 15  # undelayed check, 101-105
    assert count[("ppo", "plain")] == count[("ppo_sil", "delayed20")] == count[("ppo_bc", "delayed20")] == 15
    assert all(r.total_timesteps == 1_000_000 for r in plan)
    # seed by seed, the main comparison first: its 10 runs of seed 101 (PPO, GASIL, blind D on every task,
    # Hopper's own setting) lead
    assert [r.seed for r in plan[:11]] == [101] * 10 + [102]
    assert {(r.agent, r.task) for r in plan[:10]} == {(a, t) for a in ("ppo", "ppo_gasil") for t in TASKS}
    main_runs = 10 * 10
    assert [r.seed for r in plan[:main_runs]] == sorted(r.seed for r in plan[:main_runs])
    assert {r.agent for r in plan[main_runs:]} == {"ppo", "ppo_sil", "ppo_bc", "ppo_gasil"}
    assert all(r.setting in ("plain", "delayed20") or "delayed" not in r.setting for r in plan[main_runs:])
    without = plan_heldout(Args(results_dir=str(tmp_path), blind_d_control=False), choice)
    assert len(without) == len(plan) - 30 and not any("dlr1e-12" in r.setting for r in without)


def test_a_heldout_variant_adds_its_component_to_every_run_of_the_frozen_choice(tmp_path):
    from experiments.screen import with_component

    args = Args(results_dir=str(tmp_path), heldout_dir=str(tmp_path / "variant"),
                add_setting="truncationbootstrap")
    choice = {"single": "delayed20+lr0.0001+alpha0.2", "per_task": {"Hopper-v5": "delayed20+lr0.0003"},
              "ppo": {t: "delayed20+lr0.0003" for t in TASKS}}
    plan = plan_heldout(args, with_component(choice, args.add_setting))
    count = pd.Series([(r.agent, r.setting) for r in plan]).value_counts().to_dict()
    assert count == {("ppo", "delayed20+lr0.0003+truncationbootstrap"): 30,
                     ("ppo_gasil", "delayed20+lr0.0001+alpha0.2+truncationbootstrap"): 30,
                     ("ppo_gasil", "delayed20+lr0.0001+dlr1e-12+alpha0.2+truncationbootstrap"): 30,
                     ("ppo_gasil", "delayed20+lr0.0003+truncationbootstrap"): 10,  # Hopper's own setting
                     ("ppo", "truncationbootstrap"): 15,  # undelayed PPO
                     ("ppo_gasil", "lr0.0001+alpha0.2+truncationbootstrap"): 15,
                     ("ppo_sil", "delayed20+truncationbootstrap"): 15,
                     ("ppo_bc", "delayed20+truncationbootstrap"): 15}
    assert all("--truncation bootstrap" in " ".join(r.argv()) for r in plan)  # what ppo.py is given
    assert with_component(choice, "") is choice


@pytest.mark.parametrize(("setting", "blind"), [
    ("delayed20+lr0.0003+dupdates1+dlr0.0003+alpha0.2", "delayed20+lr0.0003+dupdates1+dlr1e-12+alpha0.2"),
    ("delayed20+dlr1e-05+envrewardnormalized", "delayed20+dlr1e-12+envrewardnormalized"),
    ("delayed20+alpha1", "delayed20+dlr1e-12+alpha1"),  # the stack's default D lr: a dlr part is added
    ("plain", "dlr1e-12"),
])
def test_blind_d_replaces_only_the_d_learning_rate(setting, blind):
    from experiments.grid import parse_setting
    from experiments.screen import blind_d

    assert blind_d(setting) == blind
    flags = parse_setting(blind)[1]
    assert dict(zip(flags[::2], flags[1::2]))["--stack.d-lr"] == "1e-12"  # the script gets one D lr: 1e-12


def test_heldout_refuses_to_start_before_the_choice_is_frozen(tmp_path):
    with pytest.raises(SystemExit, match="screen.json"):
        main(["--heldout", "--results-dir", str(tmp_path), "--dry-run"])


def test_heldout_ratios_by_hand():
    from experiments.screen import heldout_ratios

    choice = {"single": "delayed20+alpha1", "per_task": {"Hopper-v5": "delayed20+alpha0.2"},
              "ppo": {t: "P" for t in TASKS}}
    runs = {("ppo", t, "P"): p for t, p in zip(TASKS, ((900, 1100), (500, 500), (2000, 2000)))}
    gasil = ((2000, 2000), (1000, 3000), (1000,))
    runs.update({("ppo_gasil", t, "delayed20+alpha1"): g for t, g in zip(TASKS, gasil)})
    runs.update({("ppo_gasil", "Hopper-v5", "delayed20+alpha0.2"): (3000, 3000),
                 ("ppo", "Hopper-v5", "plain"): (4000,), ("ppo_gasil", "Hopper-v5", "alpha1"): (2000,),
                 ("ppo_gasil", "Hopper-v5", "delayed20+dlr1e-12+alpha1"): (1000, 1000)})
    finals = frame({(a, t, s, 101 + i): v for (a, t, s), vs in runs.items() for i, v in enumerate(vs)})
    ratios = heldout_ratios(Args(), finals, choice).set_index("task")
    assert ratios["ratio"].tolist() == [2.0, 4.0, 0.5, pytest.approx(4.0 ** (1 / 3))]
    assert ratios.loc["Hopper-v5", "ratio_task"] == 3.0  # Hopper's own setting
    # its interval: PPO's resampled means are 900, 1000 or 1100, the own setting's always 3000
    assert ratios.loc["Hopper-v5", ["ratio_task_lo", "ratio_task_hi"]].tolist() == [
        pytest.approx(3000 / 1100), pytest.approx(3000 / 900)]
    assert ratios.loc["Walker2d-v5", "ratio_task"] == 4.0  # no own setting: the single one
    assert ratios.loc["geometric mean", "ratio_task"] == pytest.approx(6.0 ** (1 / 3))
    assert ratios.loc["Hopper-v5", "repaired"] == 0.5 and ratios.loc["Hopper-v5", "ratio_undelayed"] == 0.5
    assert ratios.loc["Hopper-v5", ["n_ppo", "n_gasil"]].tolist() == [2, 2]
    # Walker2d: PPO's seeds are equal, GASIL's are 1000 and 3000: resamples give 2, 4 or 6 (1/4, 1/2, 1/4)
    assert ratios.loc["Walker2d-v5", ["ratio_lo", "ratio_hi"]].tolist() == [2.0, 6.0]
    assert ratios.loc["HalfCheetah-v5", ["ratio_lo", "ratio_hi"]].tolist() == [0.5, 0.5]
    assert pd.isna(ratios.loc["Walker2d-v5", "repaired"])  # no undelayed PPO run
    assert ratios.loc["Hopper-v5", ["over_blind", "over_blind_lo", "over_blind_hi", "n_blind"]].tolist() == [
        2.0, 2.0, 2.0, 2]  # GASIL 2000 ÷ blind D 1000 on both seeds
    assert pd.isna(ratios.loc["Walker2d-v5", "over_blind"]) and ratios.loc["Walker2d-v5", "n_blind"] == 0
    assert pd.isna(ratios.loc["geometric mean", "over_blind"])  # not every task has its control


@pytest.mark.parametrize(("num", "den"),
                         [((), (1.0,)), ((1.0,), ()), ((1.0,), (-5.0, 2.0)), ((1.0,), (0.0,))])
def test_ratio_interval_is_nan_without_a_positive_denominator(num, den):
    from experiments.screen import ratio_interval

    assert all(np.isnan(ratio_interval(np.array(num), np.array(den))))


@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=12),
       st.lists(st.floats(1.0, 1e4), min_size=1, max_size=12))
@settings(max_examples=50, deadline=None)
def test_ratio_interval_brackets_the_ratio_of_the_means(num, den):
    from experiments.screen import ratio_interval

    ratio, lo, hi = ratio_interval(np.array(num), np.array(den), n_boot=2000)
    assert ratio == pytest.approx(np.mean(num) / np.mean(den))
    corners = [n / d for n in (min(num), max(num)) for d in (min(den), max(den))]  # a resample's bounds
    assert min(corners) - 1e-9 <= lo <= hi <= max(corners) + 1e-9


def test_heldout_report_writes_the_tables_and_the_figure(tmp_path):
    """--heldout --report-only on finished runs (fabricated CSVs): heldout.csv, the ratios, fig6*.png/csv."""
    choice = {"single": "delayed20+alpha1", "per_task": {"Hopper-v5": "delayed20+alpha0.2"},
              "ppo": {t: "delayed20+lr0.0003" for t in TASKS}}
    (tmp_path / "screen.json").write_text(json.dumps(choice))
    heldout = tmp_path / "heldout"
    args = Args(results_dir=str(tmp_path), heldout_dir=str(heldout))
    plan = plan_heldout(args, choice)
    level = {"ppo": 1000.0, "ppo_gasil": 2000.0, "ppo_sil": 1500.0, "ppo_bc": 500.0}
    for run in plan:
        if run.seed in (101, 102):
            Path(run.csv_path).parent.mkdir(parents=True, exist_ok=True)
            value = level[run.agent] + run.seed - 101 + (100.0 if "alpha0.2" in run.setting else 0.0) - (
                1000.0 if "dlr1e-12" in run.setting else 0.0)
            pd.DataFrame({"run": run.name, "step": np.arange(1, 31) * 1000,
                          "true_return": np.full(30, value)}).to_csv(run.csv_path, index=False)
    logged = [run for run in plan if run.seed in (101, 102)][:3]  # the runner's start and resume lines
    for run, lines in zip(logged, (["abc1234"], ["abc1234", "abc1234"], ["abc1234", "def5678"])):
        Path(run.log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(run.log_path).write_text("".join(f"# t start: python x.py  # code {c}\nran\n" for c in lines))
    assert main(["--heldout", "--report-only", "--results-dir", str(tmp_path),
                 "--heldout-dir", str(heldout)]) == 0
    table = pd.read_csv(heldout / "heldout.csv")
    row = table[(table.agent == "ppo_gasil") & (table.task == "Hopper-v5")
                & (table.setting == choice["single"])]
    assert row[["n_seeds", "mean"]].values.tolist() == [[2, 2000.5]]
    assert row.per_seed.item() == "101:2000.0 102:2001.0"
    ratios = pd.read_csv(heldout / "heldout_ratios.csv").set_index("task")
    assert ratios.loc["Walker2d-v5", "ratio"] == pytest.approx(2000.5 / 1000.5)
    assert ratios.loc["Hopper-v5", "ratio_task"] == pytest.approx(2100.5 / 1000.5)
    assert ratios.loc["Hopper-v5", "ratio_undelayed"] == pytest.approx(2000.5 / 1000.5)
    assert (heldout / "fig6.png").stat().st_size > 0 and (heldout / "fig6.csv").exists()
    finals = pd.read_csv(heldout / "fig6_final.csv")
    hopper = finals[finals.panel == "Hopper-v5, delayed20"].set_index("curve")
    assert list(hopper.index) == ["PPO+GASIL (single setting)", "PPO+GASIL (task's setting)",
                                  "PPO+GASIL, blind D (control)", "PPO", "PPO+SIL", "PPO+BC",
                                  "PPO, undelayed"]
    assert hopper.loc["PPO+GASIL, blind D (control)", "final_mean"] == 1000.5
    assert ratios.loc["Walker2d-v5", "over_blind"] == pytest.approx(2000.5 / 1000.5)
    meta = json.loads((heldout / "heldout.json").read_text())
    assert meta["choice"] == str(tmp_path / "screen.json")  # in no git checkout: as given
    assert meta["commit"] == (os.environ.get("GASIL_COMMIT") or runner.code_version(str(runner.REPO_ROOT)))
    assert meta["run_commits"] == {"abc1234": 3, "def5678": 1, "unknown": 41}  # 44 finished runs, 3 logged
    assert ratios.loc["geometric mean", "over_blind"] == pytest.approx(2000.5 / 1000.5)
    assert hopper.loc["PPO+GASIL (task's setting)", "final_mean"] == 2100.5
    assert hopper.loc["PPO", "setting"] == "delayed20+lr0.0003"
    assert hopper.loc["PPO+SIL", "final_mean"] == 1500.5
    walker = finals[finals.panel == "Walker2d-v5, undelayed"].set_index("curve")
    assert walker.loc["PPO+GASIL (single setting)", "setting"] == "alpha1"
    assert set(finals.figure) == {"heldout"} and set(finals.n_seeds) == {2}
    # heldout.md: the same numbers as tables, and no verdict on 2 of 10 seeds
    report = (heldout / "heldout.md").read_text()
    assert "Runs finished: main comparison 20 of 100; other agents and undelayed check 24 of 60." in report
    assert "Finished runs by the code their logs name: `abc1234` 3, `def5678` 1, `unknown` 41 (**more than " \
           "one commit: the code changed inside this campaign**)." in report
    assert "**Bar** (PPO+GASIL ÷ PPO ≥ 1.0 on every delayed task and ≥ 1.5 as the geometric mean): " \
           "**incomplete**" in report and "**Defaults check**" in report and "**incomplete**." in report
    assert "| Walker2d-v5 | 1,000 | 2,000 | 2.00 [2.00, 2.00] | yes | 2,000 | 2.00 [2.00, 2.00] | 1,000 | " \
           "2.00 [2.00, 2.00] |" in report
    assert "| ppo_gasil | Hopper-v5 | `delayed20+alpha1` | 2 | 2,000 [2,000, 2,001] | " \
           "101:2000.0 102:2001.0 |" in report


def test_heldout_verdict_reads_the_bar_only_on_a_complete_comparison(tmp_path):
    from experiments.grid import expand_grid
    from experiments.screen import heldout_verdict

    main_runs, rest_runs = (expand_grid(agents=["ppo"], tasks=["Hopper-v5"], settings=[s], seeds=[1],
                                        total_timesteps=1000, results_dir=str(tmp_path))
                            for s in ("delayed20", "plain"))

    def finish(runs):
        for run in runs:
            Path(run.csv_path).parent.mkdir(parents=True, exist_ok=True)
            Path(run.csv_path).write_text("run,step,true_return\n")

    def ratios(per_task, undelayed_hi=(1.3, 1.0, 1.2)):
        geomean = float(np.prod(per_task) ** (1 / 3))
        return pd.DataFrame({"task": [*TASKS, "geometric mean"], "ratio": [*per_task, geomean],
                             "repaired": [0.95, 0.5, 0.9, np.nan],
                             "ratio_undelayed_hi": [*undelayed_hi, np.nan]})

    met = ratios((2.0, 2.0, 1.0))  # every task at least 1.0 (HalfCheetah exactly), geometric mean 1.587
    verdict = heldout_verdict(Args(), met, main_runs, rest_runs)
    assert verdict["bar"] == "incomplete" and verdict["defaults_check"] == "incomplete"
    assert verdict["per_task"] == dict.fromkeys(TASKS, True) and verdict["geomean_met"]
    assert verdict["repaired"] == {"Hopper-v5": True, "Walker2d-v5": False, "HalfCheetah-v5": True}
    finish(main_runs)
    assert heldout_verdict(Args(), met, main_runs, rest_runs)["bar"] == "met"
    assert heldout_verdict(Args(), met, main_runs, rest_runs)["defaults_check"] == "incomplete"
    assert heldout_verdict(Args(), ratios((2.0, 3.0, 0.99)), main_runs, rest_runs)["bar"] == "not met"
    assert heldout_verdict(Args(), ratios((1.2, 1.3, 1.4)), main_runs, rest_runs)["bar"] == "not met"  # 1.30
    finish(rest_runs)
    assert heldout_verdict(Args(), met, main_runs, rest_runs)["defaults_check"] == "passed"  # 1.0 reaches 1
    below = ratios((2.0, 2.0, 1.0), undelayed_hi=(1.3, 0.99, 1.2))
    assert heldout_verdict(Args(), below, main_runs, rest_runs)["defaults_check"] == "failed"
