"""Comics grounding: speaker links, character clusters and names, reading order, their metrics
against hand computations, and the grounding system through ``domainvlm fit`` and ``eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.domains.comics.characters import (
    OTHER,
    adjusted_mutual_information,
    cluster_characters,
    expected_mutual_information,
    load_bank,
    name_clusters,
)
from domainvlm.domains.comics.grounding_evaluation import GRID
from domainvlm.domains.comics.order import (
    OrderScorer,
    chance_levels,
    decode,
    kendall_tau,
    order_boxes,
    order_features,
)
from domainvlm.domains.comics.pages import ComicsDataError
from domainvlm.domains.comics.speakers import (
    SpeakerScorer,
    associate_speakers,
    chance_counts,
    count_links,
    link_metrics,
    pair_features,
    tail_descriptors,
)

from tests.helpers import CONFIGS, colour_png, fit_briefly, run_cli

# -- speakers ------------------------------------------------------------------------------------

# A hand-made page: two panels side by side, each with two characters standing at the bottom and
# one balloon above the character on the right.
TEXTS = [(60, 10, 90, 30), (160, 10, 190, 30)]
CHARACTERS = [(10, 60, 30, 100), (70, 60, 90, 100), (110, 60, 130, 100), (170, 60, 190, 100)]
PANELS = [(0, 0, 100, 110), (100, 0, 200, 110)]


def test_link_metrics_by_hand() -> None:
    # predicted {(0,1), (1,2)}, annotated {(0,1), (1,3), (2,0)}: 1 hit of 2 predicted, 3 annotated
    hits, predicted, annotated = count_links([(0, 1), (1, 2)], [(0, 1), (1, 3), (2, 0)])
    assert (hits, predicted, annotated) == (1, 2, 3)
    scores = link_metrics(hits, predicted, annotated)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # 0.4
    assert link_metrics(0, 0, 3) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # random speaker among 4 characters for 2 texts with 2 annotated links: 0.5 hits expected
    assert chance_counts(2, 4, 2) == (0.5, 2, 2)


def test_nearest_baseline_on_a_hand_made_page() -> None:
    assert associate_speakers(TEXTS, CHARACTERS) == [(0, 1), (1, 3)]
    assert associate_speakers(TEXTS, []) == [] and associate_speakers([], CHARACTERS) == []


def _balloon_page() -> np.ndarray:
    """White balloons on grey, each with a white tail towards its lower left."""
    page = np.full((120, 200, 3), 128, dtype=np.uint8)
    for x1, y1, x2, y2 in TEXTS:
        page[y1:y2, x1:x2] = 255
        for step in range(12):  # tail: down and to the left, 3 px wide
            y, x = y2 + step, x1 + 10 - step * 3
            page[y, max(x - 1, 0) : x + 2] = 255
    return page


def test_tail_points_at_the_speaker() -> None:
    tails = tail_descriptors(_balloon_page(), TEXTS)
    assert tails[:, 0].max() < -0.5 and tails[:, 1].min() > 0.3  # left and down
    assert not tail_descriptors(None, TEXTS).any()
    features = pair_features(TEXTS, CHARACTERS, PANELS, tails)
    assert features.shape == (2, 4, 18)
    # the tail feature prefers the character down-left of the balloon over the one below it
    assert features[0, 0, 12] > features[0, 1, 12]
    assert features[0, 1, 10] == 1.0 and features[0, 2, 10] == 0.0  # same panel


def test_learned_scorer_follows_the_tail() -> None:
    """A scorer trained on pages where the tail, not the distance, names the speaker."""
    torch.manual_seed(0)
    page, tails = _balloon_page(), None
    tails = tail_descriptors(page, TEXTS)
    features = torch.from_numpy(pair_features(TEXTS, CHARACTERS, PANELS, tails)).reshape(-1, 18)
    labels = torch.zeros(2, 4)
    labels[0, 0] = labels[1, 2] = 1.0  # the tails point at the left character of each panel
    scorer = SpeakerScorer()
    optimiser = torch.optim.Adam(scorer.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            scorer(features), labels.flatten()
        )
        loss.backward()
        optimiser.step()
    links = associate_speakers(TEXTS, CHARACTERS, page, scorer, threshold=0.4, panels=PANELS)
    assert links == [(0, 0), (1, 2)]
    assert associate_speakers(TEXTS, CHARACTERS, page, scorer, threshold=1.01, panels=PANELS) == []


# -- characters ----------------------------------------------------------------------------------


def test_ami_by_hand() -> None:
    # U = [0,0,1,1], V = [0,0,0,1]: n = 4, table [[2,0],[1,1]], a = (2,2), b = (3,1).
    # MI = ½ ln(4·2/(2·3)) + ¼ ln(4/(2·3)) + ¼ ln(4/(2·1)) = ½ ln(4/3) + ¼ ln(2/3) + ¼ ln 2
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    # E[MI]: n_ij ~ hypergeometric; row a=2 with column b=3 takes 1 or 2 (p ½, ½), with b=1 takes
    # 0 or 1 (p ½, ½); both rows alike:
    # 2·[½·(1/4)ln(4/6) + ½·(2/4)ln(8/6) + ½·(1/4)ln(4/2)]
    emi = 2 * (0.125 * math.log(2 / 3) + 0.25 * math.log(4 / 3) + 0.125 * math.log(2))
    assert expected_mutual_information(np.array([2, 2]), np.array([3, 1]), 4) == pytest.approx(emi)
    h_u, h_v = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (mi - emi) / ((h_u + h_v) / 2 - emi)
    assert adjusted_mutual_information([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)
    assert adjusted_mutual_information(["a", "a", "b"], [5, 5, 7]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    assert abs(adjusted_mutual_information(truth, rng.integers(0, 4, 400))) < 0.02


def test_clustering_well_separated_embeddings() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3]
    truth = np.repeat([0, 1, 2], 5)
    points = centres[truth] + 0.05 * rng.standard_normal((15, 8))
    labels = cluster_characters(points, threshold=0.5)
    assert labels.tolist() == truth.tolist()
    assert adjusted_mutual_information(truth, labels) == pytest.approx(1.0)
    assert len(set(cluster_characters(points, threshold=1.9).tolist())) == 1
    assert cluster_characters(points[:1], 0.5).tolist() == [0]


def test_naming_with_other() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(8)[:3]
    crops = centres[[0, 0, 1, 2, 2]] + 0.05 * rng.standard_normal((5, 8))
    labels = np.array([0, 0, 1, 2, 2])
    bank = centres[[0, 0, 1]] + 0.05 * rng.standard_normal((3, 8))
    names = name_clusters(crops, labels, bank, ["Ada", "Ada", "Bo"], threshold=0.5)
    assert names == ["Ada", "Ada", "Bo", OTHER, OTHER]
    assert name_clusters(crops, labels, bank[:0], [], 0.5) == [OTHER] * 5


def test_bank_folder_json_and_errors(tmp_path: Path) -> None:
    colour_png(tmp_path / "bank/Ada/1.png", (200, 0, 0))
    colour_png(tmp_path / "bank/Bo/1.png", (0, 0, 200))
    assert [name for name, _ in load_bank(tmp_path / "bank")] == ["Ada", "Bo"]
    listing = tmp_path / "bank.json"
    listing.write_text(json.dumps([{"name": "Ada", "image": "bank/Ada/1.png#xywh=0,0,4,4"}]))
    assert load_bank(listing) == [("Ada", f"{tmp_path / 'bank/Ada/1.png'}#xywh=0,0,4,4")]
    listing.write_text(json.dumps({"Ada": "x.png"}))
    with pytest.raises(ComicsDataError, match="bank.json"):
        load_bank(listing)
    with pytest.raises(ComicsDataError, match="not found"):
        load_bank(tmp_path / "missing")


# -- order ---------------------------------------------------------------------------------------

# A page of a wide top panel, then two panels side by side.
PAGE = [(0, 0, 200, 90), (0, 100, 95, 200), (105, 100, 200, 200)]


def test_kendall_tau_and_chance_by_hand() -> None:
    assert kendall_tau([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau([3, 2, 1, 0], [0, 1, 2, 3]) == -1.0
    # one swapped neighbour pair of 6 pairs: (5 − 1) / 6
    assert kendall_tau([0, 2, 1, 3], [0, 1, 2, 3]) == pytest.approx(4 / 6)
    # [2, 0, 1] vs [0, 1, 2]: (0,1) concordant, (0,2) and (1,2) discordant: (1 − 2) / 3
    assert kendall_tau([2, 0, 1], [0, 1, 2]) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError):
        kendall_tau([0, 1], [0, 2])
    assert chance_levels([2, 3, 1]) == {
        "exact": pytest.approx((1 / 2 + 1 / 6) / 2),
        "kendall_tau": 0.0,
    }


def test_rule_order_western_and_manga() -> None:
    assert order_boxes(PAGE, "ltr") == [0, 1, 2]
    assert order_boxes(PAGE, "rtl") == [0, 2, 1]


def test_decode_is_exact_and_features_mirror() -> None:
    probability = np.array([[0.5, 0.9, 0.8], [0.1, 0.5, 0.3], [0.2, 0.7, 0.5]])
    assert decode(probability) == [0, 2, 1]
    # above the exact limit: the first box is only weakly ahead of the rest (0.55), so sorting on
    # summed P(before) puts it sixth; swapping neighbours brings it back to the front
    truth = [int(i) for i in np.random.default_rng(0).permutation(14)]
    rank = {box: i for i, box in enumerate(truth)}
    big = np.array([[0.9 if rank[a] < rank[b] else 0.1 for b in range(14)] for a in range(14)])
    for c in truth[2:]:
        big[truth[0], c], big[c, truth[0]] = 0.55, 0.45
        big[truth[1], c], big[c, truth[1]] = 0.95, 0.05
    np.fill_diagonal(big, 0.5)
    assert np.argsort(-big.sum(axis=1), kind="stable").tolist()[0] == truth[1]
    assert decode(big) == truth
    ltr = order_features(PAGE, "ltr")
    mirrored = [(200 - x2, y1, 200 - x1, y2) for x1, y1, x2, y2 in PAGE]
    np.testing.assert_allclose(order_features(mirrored, "rtl"), ltr, atol=1e-6)


def test_learned_order_on_western_and_manga_pages() -> None:
    """A scorer trained on grid pages orders unseen ones, manga mirrored."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    scorer = OrderScorer()
    optimiser = torch.optim.Adam(scorer.parameters(), lr=0.01)
    pages = []
    for _ in range(20):  # rows of 1-3 panels each, as the sample's pages
        page, h = [], 50
        for r in range(rng.integers(1, 4)):
            cols = int(rng.integers(1, 4))
            w = 180 // cols
            page += [(c * w, r * h, c * w + w - 5, r * h + h - 5) for c in range(cols)]
        pages.append(page)
    pairs, swapped, labels = [], [], []
    for boxes in pages:
        if len(boxes) >= 2:
            features = torch.from_numpy(order_features(boxes, "ltr"))
            a, b = np.nonzero(~np.eye(len(boxes), dtype=bool))
            pairs.append(features[a, b])
            swapped.append(features[b, a])
            labels.append(torch.from_numpy((a < b).astype(np.float32)))
    pairs, swapped, labels = torch.cat(pairs), torch.cat(swapped), torch.cat(labels)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scorer(pairs, swapped), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    western = [(0, 0, 95, 45), (105, 0, 200, 45), (0, 55, 200, 100), (0, 110, 60, 150)]
    assert order_boxes(western, "ltr", scorer) == [0, 1, 2, 3]
    manga = [(105, 0, 200, 45), (0, 0, 95, 45), (0, 55, 200, 100)]
    assert order_boxes(manga, "rtl", scorer) == [0, 1, 2]


# -- system, fit and eval ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grounding_checkpoint(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = {"root": str(sample_root), "batch_size": 4}
    return fit_briefly(CONFIGS / "comics/grounding.yaml", tmp_path_factory.mktemp("grd"), data)


def test_fit_and_load_grounding(grounding_checkpoint: Path) -> None:
    from domainvlm.domains.comics.grounding_system import load_grounding

    speaker, order = load_grounding(grounding_checkpoint)
    assert isinstance(speaker, SpeakerScorer) and isinstance(order, OrderScorer)
    assert len(associate_speakers(TEXTS, CHARACTERS, None, speaker, threshold=0.0)) == 2
    assert sorted(order_boxes(PAGE, "ltr", order)) == [0, 1, 2]


def test_load_grounding_refuses_other_systems(checkpoint: Path) -> None:
    from domainvlm.core.errors import CheckpointError
    from domainvlm.domains.comics.grounding_system import load_grounding

    with pytest.raises(CheckpointError, match="not a comics grounding system"):
        load_grounding(checkpoint)


def test_eval_speakers_and_order(
    grounding_checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ("--checkpoint", grounding_checkpoint, "--data", sample_root)
    code, out, _ = run_cli(capsys, "eval", "speakers", *args)
    result = json.loads(out[0])
    assert code == 0 and result["pages"] == 4 and result["annotated_links"] > 0
    assert result["nearest"]["f1"] == pytest.approx(1.0)  # balloons stand above their speakers
    assert 0.0 < result["random"]["f1"] < 0.5
    code, out, _ = run_cli(capsys, "eval", "order", *args, "--table")
    assert code == 0 and out[0].startswith("reading order") and "rule" in "\n".join(out)
    code, out, _ = run_cli(capsys, "eval", "order", *args, "--jitter", "0.05")
    result = json.loads(out[0])
    assert result["jitter"] == 0.05 and result["panels"]["pages"] == 4
    assert result["panels"]["rule"]["exact"] == 1.0  # the sample lists panels in reading order
    assert result["texts"]["random"]["kendall_tau"] == 0.0


def test_eval_characters(
    checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run_cli(
        capsys, "eval", "characters", "--checkpoint", checkpoint, "--data", sample_root,
        "--threshold", "0.3", "--name-threshold", "0.5", "--leave-out", "1",
    )  # fmt: skip
    result = json.loads(out[0])
    assert code == 0 and result["books"] == 2 and result["crops"] > 10
    assert result["thresholds_from"] == "cut given, naming given" and result["threshold"] == 0.3
    assert -1.0 <= result["ami"] <= 1.0 and result["ami_chance"] == 0.0
    assert -1.0 <= result["ami_pixels"] <= 1.0
    assert len(result["left_out"]) == 1 and 0.0 <= result["naming_accuracy"] <= 1.0
    assert result["naming_uniform"] == pytest.approx(1 / (len(result["bank_names"]) + 1))


def test_eval_characters_writes_the_thresholds_it_used(
    checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "thresholds.json"
    args = ("--checkpoint", checkpoint, "--data", sample_root, "--write-thresholds", path)
    code, out, _ = run_cli(capsys, "eval", "characters", *args, "--threshold", "0.3", "--table")
    written = json.loads(path.read_text())
    assert code == 0 and out[-1] == f"thresholds written to {path} (comics predict --thresholds)"
    assert written["cluster_threshold"] == 0.3
    assert written["cluster_threshold_from"] == "given to eval characters"
    assert written["name_threshold_from"] == f"chosen on the val books of {sample_root}"
    assert written["name_threshold"] in GRID
    assert written["checkpoint"] == str(checkpoint.resolve())
    code, _, err = run_cli(capsys, "eval", "characters", *args, "--split", "val")
    assert code == 1 and "no val books of" in err
    assert "to choose --threshold and --name-threshold on; give them" in err


def test_eval_characters_refuses_a_grounding_checkpoint(
    grounding_checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = run_cli(
        capsys, "eval", "characters", "--checkpoint", grounding_checkpoint, "--data", sample_root
    )
    assert code != 0 and "GroundingSystem" in err and "comics CLIP" in err


def test_grounding_pages_carry_one_speaker_per_text_and_listed_orders(sample_root: Path) -> None:
    from domainvlm.domains.comics.grounding_data import GroundingDataModule

    data = GroundingDataModule(root=str(sample_root), batch_size=2)
    record = data.dataset("val").records[0]
    assert record.links is not None and (record.links.sum(axis=1) == 1).all()
    assert [len(boxes) for boxes in record.orders] == [len(record.panels), len(record.texts)]
    item = data.dataset("val")[0]
    assert item["speaker_x"].shape == (len(record.texts) * len(record.characters), 18)
    assert item["speaker_y"].sum() == len(record.texts)
    n_panels, n_texts = len(record.panels), len(record.texts)
    pairs = n_panels * (n_panels - 1) + n_texts * (n_texts - 1)
    assert item["order_x"].shape[0] == pairs and item["order_y"].sum() == pairs / 2
    batch = next(iter(data.loader("val")))
    assert batch["pages"].tolist() == [1, 1] and batch["speaker_x"].shape[1] == 18


def test_annotated_orders_name_a_malformed_file(tmp_path: Path) -> None:
    from domainvlm.domains.comics.order import annotated_orders

    (tmp_path / "annotations").mkdir()
    (tmp_path / "books.txt").write_text("Book\n")
    (tmp_path / "annotations/Book.xml").write_text("<book><pages><page")
    with pytest.raises(ComicsDataError, match="Book.xml"):
        annotated_orders(tmp_path)
