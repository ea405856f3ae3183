"""Tests for engine.postprocess.label_fusion."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.postprocess.label_fusion import (
    ScoreFileError,
    UnknownVideoError,
    VideoScores,
    fuse_top_k,
    fuse_video,
    load_activitynet_scores,
    load_class_list,
    load_score_matrix,
    load_thumos_scores,
    load_video_list,
)

DETCLASSLIST = "7 BaseballPitch\n9 BasketballDunk\n12 Billiards\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- VideoScores


@pytest.fixture
def vs() -> VideoScores:
    return VideoScores(["a", "b"], ["X", "Y", "Z"], np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.9]]))


def test_top_k_order_and_values(vs: VideoScores) -> None:
    assert vs.top_k("a", 2) == [("Y", 0.7), ("Z", pytest.approx(0.2))]
    assert vs.top_k("b", 3) == [("Z", 0.9), ("X", 0.5), ("Y", 0.5)]  # tie keeps class order
    assert vs.top_k("a", 10) == [("Y", 0.7), ("Z", 0.2), ("X", 0.1)]  # k clipped to C
    assert vs.as_dict("a") == {"X": 0.1, "Y": 0.7, "Z": 0.2}
    assert "a" in vs and "c" not in vs and len(vs) == 2


def test_top_k_rejects_bad_k(vs: VideoScores) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        vs.top_k("a", 0)


def test_unknown_video_is_keyerror_naming_it(vs: VideoScores) -> None:
    with pytest.raises(KeyError) as info:
        vs.top_k("nope", 1)
    assert isinstance(info.value, UnknownVideoError)
    assert "'nope'" in str(info.value)
    assert info.value.video == "nope"


def test_unknown_video_hints_v_prefix() -> None:
    s = VideoScores(["abc123"], ["X"], np.array([[1.0]]))
    with pytest.raises(UnknownVideoError, match=r"'v_abc123'.*but 'abc123' is present"):
        s.scores("v_abc123")


def test_videoscores_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        VideoScores(["a"], ["X", "Y"], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="duplicate video 'a'"):
        VideoScores(["a", "a"], ["X"], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="non-finite score for video 'b', class 'X'"):
        VideoScores(["a", "b"], ["X"], np.array([[0.0], [np.nan]]))


# ----------------------------------------------------------------------------- THUMOS loaders


def test_class_list_parses_and_reports_lines(tmp_path: Path) -> None:
    assert load_class_list(_write(tmp_path, "c.txt", DETCLASSLIST + "\n")) == [
        (7, "BaseballPitch"), (9, "BasketballDunk"), (12, "Billiards")]
    bad = _write(tmp_path, "bad.txt", "7 BaseballPitch\nnine BasketballDunk\n")
    with pytest.raises(ScoreFileError, match=r"bad\.txt:2: class id 'nine' is not an integer") as info:
        load_class_list(bad)
    assert info.value.line == 2 and info.value.path == str(bad)
    with pytest.raises(ScoreFileError, match=r":3: expected '<id> <ClassName>'"):
        load_class_list(_write(tmp_path, "b2.txt", "7 A\n9 B\n12 Two Words\n"))
    with pytest.raises(ScoreFileError, match=r":2: class id 7 already used on line 1"):
        load_class_list(_write(tmp_path, "b3.txt", "7 A\n7 B\n"))
    with pytest.raises(ScoreFileError, match=r":2: class 'A' already listed on line 1"):
        load_class_list(_write(tmp_path, "b4.txt", "7 A\n8 A\n"))
    with pytest.raises(ScoreFileError, match="empty"):
        load_class_list(_write(tmp_path, "b5.txt", "\n\n"))


def test_real_detclasslist_if_present(shared_data: Path) -> None:
    classes = load_class_list(shared_data / "thumos14" / "annotations_test" / "detclasslist.txt")
    assert len(classes) == 20
    assert classes[0] == (7, "BaseballPitch") and classes[-1] == (97, "VolleyballSpiking")


def test_video_list_errors(tmp_path: Path) -> None:
    assert load_video_list(_write(tmp_path, "v.txt", "v1\n v2 \n\n\n")) == ["v1", "v2"]
    with pytest.raises(ScoreFileError, match=r"vb\.txt:2: blank line"):
        load_video_list(_write(tmp_path, "vb.txt", "v1\n\nv2\n"))
    with pytest.raises(ScoreFileError, match=r":3: video 'v1' already listed on line 1"):
        load_video_list(_write(tmp_path, "vd.txt", "v1\nv2\nv1\n"))
    with pytest.raises(ScoreFileError, match=r":1: expected one video name per line"):
        load_video_list(_write(tmp_path, "vs.txt", "v1 0.5\n"))


def test_text_matrix_errors_name_line(tmp_path: Path) -> None:
    m = load_score_matrix(_write(tmp_path, "m.txt", "# header\n0.1 0.2\n\n0.3 0.4  # c\n"))
    np.testing.assert_array_equal(m, [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ScoreFileError, match=r"r\.txt:3: 3 values, but line 1 has 2"):
        load_score_matrix(_write(tmp_path, "r.txt", "0.1 0.2\n0.3 0.4\n0.5 0.6 0.7\n"))
    with pytest.raises(ScoreFileError, match=r"n\.txt:2: 'abc' is not a number"):
        load_score_matrix(_write(tmp_path, "n.txt", "0.1 0.2\n0.3 abc\n"))
    with pytest.raises(ScoreFileError, match=r"f\.txt:1: non-finite"):
        load_score_matrix(_write(tmp_path, "f.txt", "nan 0.2\n"))


def test_npy_matrix_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ScoreFileError, match=r"one\.npy: expected a 2-D matrix"):
        load_score_matrix(tmp_path / "one.npy")
    np.save(tmp_path / "inf.npy", np.array([[0.0, np.inf]]))
    with pytest.raises(ScoreFileError, match=r"inf\.npy: non-finite value at row 0, column 1"):
        load_score_matrix(tmp_path / "inf.npy")
    _write(tmp_path, "junk.npy", "not numpy")
    with pytest.raises(ScoreFileError, match=r"junk\.npy: cannot read"):
        load_score_matrix(tmp_path / "junk.npy")


def test_thumos_one_column_per_class(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.array([[0.1, 0.8, 0.3], [0.6, 0.2, 0.9]]))
    vs = load_thumos_scores(tmp_path / "s.npy", _write(tmp_path, "c.txt", DETCLASSLIST),
                            _write(tmp_path, "v.txt", "video_test_0000004\nvideo_test_0000007\n"))
    assert vs.class_names == ("BaseballPitch", "BasketballDunk", "Billiards")
    assert vs.top_k("video_test_0000004", 2) == [("BasketballDunk", 0.8), ("Billiards", 0.3)]
    assert vs.top_k("video_test_0000007", 1) == [("Billiards", 0.9)]


def test_thumos_101_columns_use_ucf_ids(tmp_path: Path) -> None:
    mat = np.zeros((3, 101))
    mat[1, 6] = 0.7  # id 7 BaseballPitch -> column 6
    mat[1, 11] = 0.4  # id 12 Billiards -> column 11
    mat[1, 50] = 0.99  # not a detection class: must be ignored
    np.savetxt(tmp_path / "s.txt", mat)
    vs = load_thumos_scores(tmp_path / "s.txt", _write(tmp_path, "c.txt", DETCLASSLIST),
                            row_name_format="video_test_{:07d}")
    assert vs.videos == ("video_test_0000001", "video_test_0000002", "video_test_0000003")
    assert vs.top_k("video_test_0000002", 2) == [("BaseballPitch", 0.7), ("Billiards", 0.4)]


def test_thumos_loader_mismatch_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros((2, 10)))
    classes = _write(tmp_path, "c.txt", DETCLASSLIST)
    with pytest.raises(ScoreFileError, match=r"s\.npy: has 10 columns.*'Billiards' id 12"):
        load_thumos_scores(tmp_path / "s.npy", classes, row_name_format="v{}")
    np.save(tmp_path / "t.npy", np.zeros((2, 3)))
    with pytest.raises(ScoreFileError, match=r"v\.txt: lists 3 videos but .*t\.npy has 2 rows"):
        load_thumos_scores(tmp_path / "t.npy", classes, _write(tmp_path, "v.txt", "a\nb\nc\n"))
    with pytest.raises(ValueError, match="exactly one"):
        load_thumos_scores(tmp_path / "t.npy", classes)


# ----------------------------------------------------------------------------- ActivityNet loader


@pytest.mark.parametrize("wrapped", [True, False])
def test_anet_dict_layout(tmp_path: Path, wrapped: bool) -> None:
    body = {"vidA": {"Archery": 0.2, "Bowling": 0.7, "Surfing": 0.1},
            "vidB": {"Bowling": 0.3, "Surfing": 0.6, "Archery": 0.1}}
    data = {"version": "1.3", "results": body, "external_data": {}} if wrapped else body
    vs = load_activitynet_scores(_write(tmp_path, "a.json", json.dumps(data)))
    assert vs.top_k("vidA", 2) == [("Bowling", 0.7), ("Archery", 0.2)]
    assert vs.top_k("vidB", 2) == [("Surfing", 0.6), ("Bowling", 0.3)]  # key order per video irrelevant


def test_anet_cuhk_list_layout(tmp_path: Path) -> None:
    data = {"results": {"abc": [0.1, 0.5, 0.4]}, "class": ["Archery", "Bowling", "Surfing"]}
    vs = load_activitynet_scores(_write(tmp_path, "cuhk.json", json.dumps(data)))
    assert vs.top_k("abc", 2) == [("Bowling", 0.5), ("Surfing", 0.4)]


@pytest.mark.parametrize(
    "data,match",
    [
        ({"results": {"v1": {"A": 0.1}, "v2": {"B": 0.2}}}, r"key 'results/v2': class set differs"),
        ({"v1": {"A": 0.1}, "v2": {"A": "high"}}, r"key 'v2/A': score must be a number"),
        ({"v1": {"A": True}}, r"key 'v1/A': score must be a number"),
        ({"results": {"v1": [0.1, 0.2]}}, r"key 'results/v1': scores are lists but there is no 'class'"),
        ({"results": {"v1": [0.1]}, "class": ["A", "B"]}, r"key 'results/v1': has 1 scores but there are 2"),
        ({"results": {"v1": [0.1, 0.2]}, "class": ["A", "A"]}, r"key 'class': class 'A' listed twice"),
        ({"results": [1, 2]}, r"key 'results': must be an object of videos"),
        ({"results": {"v1": 3}}, r"key 'results/v1': expected class scores"),
        ({"results": {"v1": {"A": 0.1}, "v2": [0.2]}}, r"key 'results/v2': expected an object"),
        ({"results": {}}, r"key 'results': no videos"),
        ([1, 2], r"top level must be an object"),
    ],
)
def test_anet_errors_name_file_and_key(tmp_path: Path, data, match: str) -> None:
    p = _write(tmp_path, "bad.json", json.dumps(data))
    with pytest.raises(ScoreFileError, match=match) as info:
        load_activitynet_scores(p)
    assert str(p) in str(info.value)


def test_anet_invalid_json_names_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "broken.json", '{\n  "v1": {"A": 0.1},\n  "v2": {"A": 0.2,}\n}\n')
    with pytest.raises(ScoreFileError, match=r"broken\.json:3: invalid JSON") as info:
        load_activitynet_scores(p)
    assert info.value.line == 3


# ----------------------------------------------------------------------------- fusion


def test_fuse_top_k_duplicates_per_class() -> None:
    proposals = [{"segment": [1.0, 2.0], "score": 0.5, "video": "x"}, {"segment": [3, 4], "score": 0.8}]
    out = fuse_top_k(proposals, [("Surfing", 0.1), ("Bowling", 0.6), ("Archery", 0.3)], k=2)
    got = [(d["segment"], d["label"], round(d["score"], 12)) for d in out]
    assert got == [
        ([3.0, 4.0], "Bowling", 0.48),
        ([1.0, 2.0], "Bowling", 0.3),
        ([3.0, 4.0], "Archery", 0.24),
        ([1.0, 2.0], "Archery", 0.15),
    ]
    assert out[1]["video"] == "x"  # extra keys copied
    assert proposals[0] == {"segment": [1.0, 2.0], "score": 0.5, "video": "x"}  # input untouched


def test_fuse_top_k_default_k_is_two_and_k_clips() -> None:
    props = [{"segment": [0, 1], "score": 1.0}]
    assert len(fuse_top_k(props, [("A", 0.9), ("B", 0.5), ("C", 0.1)])) == 2
    assert [d["label"] for d in fuse_top_k(props, [("A", 0.9)], k=5)] == ["A"]
    assert fuse_top_k([], [("A", 0.9)]) == []


def test_fuse_top_k_validation() -> None:
    props = [{"segment": [0, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fuse_top_k(props, [("A", 1.0)], k=0)
    with pytest.raises(ValueError, match="class_scores is empty"):
        fuse_top_k(props, [])
    with pytest.raises(ValueError, match=r"class_scores\[0\]"):
        fuse_top_k(props, [("A", float("nan"))])
    with pytest.raises(ValueError, match="proposal 0 needs 'segment' and 'score'"):
        fuse_top_k([{"segment": [0, 1]}], [("A", 1.0)])


def test_fuse_video_uses_video_scores(vs: VideoScores) -> None:
    out = fuse_video([{"segment": [0, 1], "score": 0.5}], vs, "b", k=2)
    assert [(d["label"], d["score"]) for d in out] == [("Z", 0.45), ("X", 0.25)]
    with pytest.raises(UnknownVideoError):
        fuse_video([{"segment": [0, 1], "score": 0.5}], vs, "zzz")
