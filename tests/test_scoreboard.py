"""The scoreboard cannot drift from the committed results, and shows no verdict without n and an interval."""

import json

import pandas as pd
import pytest

from cnnvis import scoreboard
from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, Claim, claims_frame
from cnnvis.config import REPO


def _claim(ours, n, verdict=REPRODUCED, rule="r", reason=""):
    return Claim(paper="Zeiler & Fergus 2014", source="Fig. 7", claim="c", paper_number="qualitative", ours=ours,
                 n=n, baseline="centre 0.90", rule=rule, verdict=verdict, reason=reason)


def _folder(root, name, claims=None, legacy=False):
    folder = root / name
    folder.mkdir(parents=True)
    run = {"overrides": [f"experiment={name}"], "config": {"model": {"name": "efficientnet_lite0", "pretrained": True},
                                                            "dataset": {"name": "imagenet_val"}}}
    (folder / "run.json").write_text(json.dumps(run))
    if claims is not None:
        claims_frame(claims).to_csv(folder / "claims.csv", index=False)
    if legacy:
        pd.DataFrame({"paper's claim": ["x"], "ours": ["y"], "agrees": ["yes"]}).to_csv(folder / "claims.csv", index=False)


def test_the_committed_scoreboard_and_gallery_are_regenerated_exactly():
    for path, text in scoreboard.generate().items():
        assert path.read_text() == text, f"{path} is out of date: run python -m cnnvis.scoreboard"


def test_every_committed_scoreboard_row_has_n_and_an_interval():
    for folder in scoreboard.read_results(REPO / "results"):
        if folder.claims is not None:
            for _, row in folder.claims.iterrows():
                assert scoreboard.row_problems(row) == [], (folder.name, row["claim"])


def test_a_mean_without_an_interval_or_n_is_refused():
    row = claims_frame([_claim("0.936 (n = 1389)", 1389)]).iloc[0]
    assert "a mean over n > 1 without its 95 % interval" in scoreboard.row_problems(row)
    row = claims_frame([_claim("0.936", 5)]).iloc[0]
    assert "'ours' does not print its n" in scoreboard.row_problems(row)
    ok = claims_frame([_claim("0.936 [0.921, 0.949] (n = 1389)", 1389)]).iloc[0]
    assert scoreboard.row_problems(ok) == []
    absent = claims_frame([_claim("-", 0, NOT_COMPARABLE, reason="caltech256 absent under the data root")]).iloc[0]
    assert scoreboard.row_problems(absent) == []  # nothing ran (e.g. Caltech-256 absent): its reason says so
    assert "no n" in scoreboard.row_problems(claims_frame([_claim("-", 0, CONTRADICTED)]).iloc[0])


def test_summary_counts_verdicts_and_old_tables_stay_off_the_board(tmp_path):
    root = tmp_path / "results"
    _folder(root, "zfnet_occlusion", [_claim("0.2 [0.1, 0.3] (n = 50)", 50), _claim("0.0 [-0.1, 0.1] (n = 50)", 50, INCONCLUSIVE),
                                      _claim("-0.2 [-0.3, -0.1] (n = 50)", 50, CONTRADICTED)])
    _folder(root, "zfnet_invariance", legacy=True)
    folders = scoreboard.read_results(root)
    text = scoreboard.scoreboard_markdown(folders)
    assert "**Zeiler & Fergus 2014** (3 claims): 1 reproduced, 1 contradicted, 1 inconclusive" in text
    assert "[zfnet_invariance](zfnet_invariance/): claims.csv" in text and "agrees" not in text


def test_each_rule_is_one_footnote_however_many_rows_use_it(tmp_path):
    root = tmp_path / "results"
    _folder(root, "zfnet_occlusion", [_claim("0.2 [0.1, 0.3] (n = 50)", 50, rule="same rule")] * 3
            + [_claim("0.2 [0.1, 0.3] (n = 50)", 50, rule="other rule")])
    text = scoreboard.scoreboard_markdown(scoreboard.read_results(root))
    assert text.count("same rule") == 1 and "1. same rule" in text and "2. other rule" in text
    assert text.count("reproduced [1]") == 3


def test_tables_from_before_the_four_answers_are_shown_with_the_control_missing(tmp_path):
    root = tmp_path / "results"
    _folder(root, "zfnet_occlusion", [_claim("0.2 [0.1, 0.3] (n = 50)", 50)])
    frame = pd.read_csv(root / "zfnet_occlusion" / "claims.csv")
    frame[scoreboard.TWO_ANSWER_COLUMNS].assign(verdict="not reproduced").to_csv(root / "zfnet_occlusion" / "claims.csv", index=False)
    text = scoreboard.scoreboard_markdown(scoreboard.read_results(root))
    assert "1 not reproduced" in text and "not run (table predates the control)" in text


def test_gallery_section_replaces_only_what_is_between_its_markers():
    readme = f"intro\n{scoreboard.GALLERY_START}\nold\n{scoreboard.GALLERY_END}\nrest\n"
    new = scoreboard.with_gallery(readme, f"{scoreboard.GALLERY_START}\nnew\n{scoreboard.GALLERY_END}")
    assert new == f"intro\n{scoreboard.GALLERY_START}\nnew\n{scoreboard.GALLERY_END}\nrest\n"
    with pytest.raises(ValueError, match="markers"):
        scoreboard.with_gallery("no markers", "x")


def test_a_run_that_recorded_no_network_claims_none():
    from cnnvis.scoreboard import describe_run

    config = {"model": {"name": "zfnet"}, "dataset": {"name": "caltech101"}}
    # not "trained in this run": resnet18_finetune's record said so of ImageNet weights it never trained
    assert describe_run({"config": config, "weights": []})[0] == "zfnet (weights not recorded)"
    assert describe_run({"config": config})[0] == "zfnet (not recorded)"  # a run.json from before the record
    loaded = [{"model": "zfnet", "weights": "checkpoint"}]
    assert describe_run({"config": config, "weights": loaded})[0] == "zfnet (checkpoint)"


@pytest.mark.parametrize("trained, shown", [(0, False), (1, True), (None, True)])
def test_a_run_that_failed_the_trained_enough_gate_stays_out_of_the_gallery(tmp_path, trained, shown):
    root = tmp_path / "results"
    _folder(root, "cam_gap")
    if trained is not None:  # run.json's metrics carry the gate (cnnvis.gate); older runs have none
        run = json.loads((root / "cam_gap" / "run.json").read_text())
        (root / "cam_gap" / "run.json").write_text(json.dumps({**run, "metrics": {"trained_enough": trained}}))
    (root / "cam_gap" / "cam_maps.png").write_bytes(b"png")
    gallery = scoreboard.gallery_markdown(scoreboard.read_results(root), root)
    assert ("cam_gap.png" in gallery) == shown


@pytest.mark.parametrize("weights, shown", [("random init", False), ("random init, head N(0, 0.01^2)", False),
                                             ("pretrained ImageNet", True)])
def test_a_figure_of_random_weights_stays_out_of_the_gallery_and_loses_its_thumbnail(tmp_path, weights, shown):
    from PIL import Image

    root = tmp_path / "results"
    _folder(root, "cam_beyond")
    run_json = root / "cam_beyond" / "run.json"
    networks = [{"model": "efficientnet_lite0", "weights": "pretrained ImageNet"},
                {"model": "vit_b_16", "weights": weights}]
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "weights": networks}))
    Image.new("RGB", (800, 600)).save(root / "cam_beyond" / "cam_beyond.png")
    (root / "gallery").mkdir()
    Image.new("RGB", (400, 300)).save(root / "gallery" / "cam_beyond.png")  # from when the figure was shown
    folders = scoreboard.read_results(root)
    assert ("cam_beyond.png" in scoreboard.gallery_markdown(folders, root)) == shown
    written = scoreboard.write_thumbnails(folders, root)
    assert written == ([root / "gallery" / "cam_beyond.png"] if shown else [])
    assert (root / "gallery" / "cam_beyond.png").is_file() == shown


def test_the_summary_lists_each_answer_with_its_claims_and_reasons(tmp_path):
    from dataclasses import replace

    root = tmp_path / "results"
    inconclusive = replace(_claim("0.0 [-0.1, 0.1] (n = 50)", 50, INCONCLUSIVE), claim="it moves",
                           reason="interval includes 0; smallest detectable effect 0.14")
    _folder(root, "zfnet_occlusion", [_claim("0.2 [0.1, 0.3] (n = 50)", 50), inconclusive])
    text = scoreboard.scoreboard_markdown(scoreboard.read_results(root))
    summary = text.split("## Summary")[1].split("## Every claim")[0]
    assert "  - reproduced:\n    - c (Fig. 7)\n" in summary
    assert "  - inconclusive:\n    - it moves (Fig. 7): interval includes 0; smallest detectable effect 0.14" in summary


def test_a_run_that_read_another_runs_checkpoint_names_it_and_its_trainer():
    from cnnvis.scoreboard import describe_run

    config = {"model": {"name": "zfnet"}, "dataset": {"name": "caltech101"}}
    trainer = [{"run_id": "r0", "experiment": "train", "git_commit": "abcdef0123"}]
    read = {"path": "data/checkpoints/zfnet_caltech101-4f5f/last.pt", "sha256": "0", "trained_by": trainer,
            "trained_in_this_run": False}
    assert (describe_run({"config": config, "weights": [], "checkpoints": [read]})[0]
            == "zfnet_caltech101-4f5f/last.pt (trained by train at abcdef0)")
    written = {**read, "trained_in_this_run": True}
    assert (describe_run({"config": config, "weights": [], "checkpoints": [written]})[0]
            == "zfnet_caltech101-4f5f/last.pt (trained in this run)")


def test_a_run_that_read_some_checkpoints_and_trained_others_names_them_all_each_trainer_once():
    from cnnvis.scoreboard import describe_run

    def entry(folder, trainer, this_run=False):
        return {"path": f"data/checkpoints/{folder}/last.pt", "sha256": "0", "trained_in_this_run": this_run,
                "trained_by": [{"run_id": "r", "experiment": trainer, "git_commit": "abcdef0123"}]}

    checkpoints = [entry("zfnet-a", "zfnet_conv1_ablation"), entry("zfnet-b", "zfnet_arch_ablation"),
                   entry("zfnet-c", "zfnet_arch_ablation"), entry("zfnet-d", "zfnet_arch_ablation", this_run=True)]
    epochs = [{**entry("zfnet-e", "train"), "path": f"data/checkpoints/zfnet-e/epoch_{i:03d}.pt"} for i in (1, 2)]
    text = describe_run({"config": {"model": {"name": "zfnet"}}, "weights": [], "checkpoints": checkpoints + epochs})[0]
    # the arch ablation's row named 13 of its 16 networks: those it trained itself were left out
    assert text == ("zfnet-a/last.pt (trained by zfnet_conv1_ablation at abcdef0); zfnet-b/last.pt, zfnet-c/last.pt "
                    "(trained by zfnet_arch_ablation at abcdef0); zfnet-d/last.pt (trained in this run); "
                    "2 checkpoints of zfnet-e (trained by train at abcdef0)")


def test_gallery_and_rows_name_what_each_figure_and_row_shows(tmp_path):
    root = tmp_path / "results"
    _folder(root, "sanity_checks", [_claim("0.5 [0.4, 0.6] (n = 32)", 32), _claim("0.7 [0.6, 0.8] (n = 64)", 64)])
    run_json = root / "sanity_checks" / "run.json"
    run = json.loads(run_json.read_text())
    efficientnet = {"network": "efficientnet_lite0 (pretrained)", "data": "imagenet_val (32 images)"}
    zfnet = {"network": "zfnet_caltech101/last.pt (trained in this run)", "data": "caltech101 (64 images)"}
    run.update(weights=[], shows={"imagenet_cascade.png": efficientnet, "claims.csv": [efficientnet, zfnet]})
    run_json.write_text(json.dumps(run))
    [folder] = scoreboard.read_results(root)
    assert list(folder.claims.network) == [efficientnet["network"], zfnet["network"]]
    assert list(folder.claims.data) == [efficientnet["data"], zfnet["data"]]
    assert folder.figure_shows("imagenet_cascade.png") == tuple(efficientnet.values())
    assert folder.figure_shows("caltech101_cascade.png") == (folder.network, folder.data)  # none recorded: the run's
