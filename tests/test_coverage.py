"""``data coverage``: rows per spec topic and language, with a keyword embedder standing in
for multilingual-e5-small (and the tiny BERT where the command line loads a real encoder)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from topicguard._exceptions import SpecError
from topicguard.cli import app
from topicguard.coverage import Coverage, TransformerEmbedder, coverage
from topicguard.data import Example
from topicguard.spec import GuardSpec

from conftest import write_rows

SPEC = {
    "name": "tiny",
    "company": "Parcels",
    "purpose": "support for parcels",
    "policy": "parcels only",
    "allowed_topics": ["tracking a parcel", "shipping rates and prices"],
    "blocked_topics": ["writing poems and stories", "other carriers like UPS"],
    "languages": ["en", "de"],
}
# one dimension per keyword group, and one that every text has (no zero vectors)
KEYWORDS = [
    ("track", "parcel", "paket", "sendung"),
    ("rate", "price", "cost", "preis"),
    ("poem", "story", "gedicht"),
    ("ups", "fedex", "carrier"),
]


def keyword_embed(texts: Sequence[str]) -> np.ndarray:
    assert all(t.startswith("query: ") for t in texts)  # the e5 prefix
    rows = [
        [sum(t.lower().count(word) for word in group) for group in KEYWORDS] + [0.1] for t in texts
    ]
    return np.asarray(rows, dtype=np.float32)


def _rows() -> list[dict]:
    rows = [
        {"text": f"track parcel {i}", "label": True, "category": "tracking", "lang": "en"}
        for i in range(6)
    ]
    rows += [
        {"text": f"wo ist mein paket {i}", "label": True, "category": "tracking", "lang": "de"}
        for i in range(2)
    ]
    rows += [
        {"text": f"price to ship {i} kg", "label": True, "category": "rates", "lang": "en"}
        for i in range(5)
    ]
    for lang, word in (("en", "poem"), ("de", "gedicht")):
        rows += [
            {"text": f"{word} number {i}", "label": False, "category": "poems", "lang": lang}
            for i in range(5)
        ]
    # no category: placed one by one (both read as carriers, though one also asks a price)
    rows += [
        {"text": "what does ups charge", "label": False, "lang": "en"},
        {"text": "fedex price for 2kg", "label": False, "lang": "en"},
    ]
    rows.append({"text": "suivre mon colis", "label": True, "category": "tracking", "lang": "fr"})
    return rows


def _examples(rows: list[dict]) -> list[Example]:
    return [Example(**r) for r in rows]


def _cells(result: Coverage) -> dict[tuple[str, str], int]:
    return {(c.topic, c.lang): c.rows for c in result.cells}


def test_coverage_counts_every_topic_per_language_thin_cells_first() -> None:
    spec = GuardSpec.model_validate(SPEC)
    result = coverage(spec, _examples(_rows()), embed=keyword_embed, min_rows=5)
    cells = _cells(result)
    assert len(cells) == 8  # 4 topics x 2 languages
    assert cells[("tracking a parcel", "en")] == 6
    assert cells[("tracking a parcel", "de")] == 2
    assert cells[("shipping rates and prices", "en")] == 5
    assert cells[("writing poems and stories", "de")] == 5
    assert cells[("other carriers like UPS", "en")] == 2
    assert result.category_topics == {
        "poems": "writing poems and stories",
        "rates": "shipping rates and prices",
        "tracking": "tracking a parcel",
    }
    thin = [(c.topic, c.lang, c.rows) for c in result.thin]
    assert thin == [
        ("shipping rates and prices", "de", 0),
        ("other carriers like UPS", "de", 0),
        ("tracking a parcel", "de", 2),
        ("other carriers like UPS", "en", 2),
    ]
    assert (result.placed_by_category, result.placed_by_similarity) == (24, 2)
    assert result.other_languages == {"fr": 1}
    summary = result.to_dict()
    json.dumps(summary)
    assert summary["n_rows"] == 26 and summary["n_thin"] == 4
    assert summary["totals"]["by_side"] == {"allowed": 13, "blocked": 12}
    assert summary["totals"]["by_language"] == {"en": 18, "de": 7}
    assert summary["thin"][0] == {
        "topic": "shipping rates and prices",
        "side": "allowed",
        "lang": "de",
        "rows": 0,
    }
    assert any("without a category" in note for note in summary["notes"])


def test_without_a_category_column_every_row_is_placed_by_similarity() -> None:
    rows = [{k: v for k, v in r.items() if k != "category"} for r in _rows()]
    result = coverage(GuardSpec.model_validate(SPEC), _examples(rows), embed=keyword_embed)
    assert not result.has_category_column and result.category_topics == {}
    assert (result.placed_by_category, result.placed_by_similarity) == (0, 26)
    assert result.notes[0].startswith("the data has no category column")
    assert _cells(result)[("tracking a parcel", "en")] == 6
    assert len(result.thin) == 8  # the default minimum is 30 rows


def test_small_categories_and_rows_against_their_category_go_row_by_row() -> None:
    rows = _rows()
    rows.append({"text": "ups tracking", "label": True, "category": "rare", "lang": "en"})
    # labelled off topic inside an on-topic category: placed among the blocked topics
    rows.append({"text": "a poem about parcels", "label": False, "category": "rates", "lang": "en"})
    result = coverage(
        GuardSpec.model_validate(SPEC), _examples(rows), embed=keyword_embed, min_category_rows=3
    )
    assert "rare" not in result.category_topics
    assert result.placed_by_similarity == 4
    assert _cells(result)[("tracking a parcel", "en")] == 7
    assert _cells(result)[("writing poems and stories", "en")] == 6
    assert any("fewer than 3 rows" in note and "rare" in note for note in result.notes)
    assert any("against their category" in note for note in result.notes)


def test_rows_without_a_language_get_the_detected_one() -> None:
    rows = _rows()
    rows[0] |= {"text": "where can I track my parcel, it has not arrived yet", "lang": None}
    rows.append(
        {
            "text": "Wo ist mein Paket? Die Sendung ist seit einer Woche nicht angekommen.",
            "label": True,
            "category": "tracking",
        }
    )
    result = coverage(GuardSpec.model_validate(SPEC), _examples(rows), embed=keyword_embed)
    assert _cells(result)[("tracking a parcel", "en")] == 6
    assert _cells(result)[("tracking a parcel", "de")] == 3
    assert any(note.startswith("2 rows without a lang") for note in result.notes)


@pytest.mark.parametrize("side", ["allowed_topics", "blocked_topics"])
def test_an_empty_topic_list_is_refused(side: str) -> None:
    spec = GuardSpec.model_construct(**(SPEC | {side: []}))
    with pytest.raises(SpecError, match=f"{side} is empty"):
        coverage(spec, _examples(_rows()), embed=keyword_embed)


def test_the_transformer_embedder_mean_pools_and_normalises(tiny_bert: Path) -> None:
    embed = TransformerEmbedder(str(tiny_bert), batch_size=2)
    vectors = embed(["query: where is my parcel", "query: hi", "query: a longer text here"])
    assert vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    again = embed(["query: hi"])
    assert np.allclose(again[0], vectors[1], atol=1e-5)  # padding does not change a text


def _spec_file(tmp_path: Path, **changes: object) -> Path:
    import yaml

    path = tmp_path / "guard.yaml"
    path.write_text(yaml.safe_dump(SPEC | changes), encoding="utf-8")
    return path


def test_cli_prints_json_and_a_table(tiny_bert: Path, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path)
    data = write_rows(tmp_path / "rows.jsonl", _rows())
    base = ["data", "coverage", str(spec), str(data), "--embedding-model", str(tiny_bert)]
    result = CliRunner().invoke(app, [*base, "--json", "--min-rows", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["min_rows"] == 3 and summary["n_rows"] == 26
    assert summary["n_cells"] == 8 and summary["placed_by_similarity"] == 2
    assert sum(c["rows"] for c in summary["cells"]) == 25
    assert [c["rows"] for c in summary["thin"]] == sorted(c["rows"] for c in summary["thin"])
    table = CliRunner().invoke(app, base)
    assert table.exit_code == 0, table.output
    assert "thin cells" in table.stdout and "by similarity: 2 rows" in table.stdout


def test_cli_says_when_there_is_no_category_column(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "category"} for r in _rows()]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    args = ["data", "coverage", str(_spec_file(tmp_path)), str(data)]
    result = CliRunner().invoke(app, [*args, "--embedding-model", str(tiny_bert)])
    assert result.exit_code == 0, result.output
    assert "no category column" in result.stdout


@pytest.mark.parametrize("problem", ["bad json", "empty blocked topics"])
def test_cli_bad_input_is_one_line(problem: str, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", _rows())
    spec = _spec_file(tmp_path)
    if problem == "bad json":
        data.write_text('{"text": "where is my parcel", "label": true}\n{"text": 1\n')
    else:
        spec = _spec_file(tmp_path, blocked_topics=[])
    result = CliRunner().invoke(app, ["data", "coverage", str(spec), str(data)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
