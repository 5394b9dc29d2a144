"""Batch-retrieval reports: `report.jsonl` and a browsable `report.html`.

`report.jsonl` holds one JSON object per query (DESIGN.md section 4), read by
other tools, so its shape is stable. In the types below:

  ReportRecord:
    query_id: str
    prompt: str
    target: str
    prediction: str               # the model's own greedy continuation
    correct: bool                 # prediction == target
    frequency_bucket: str | None  # e.g. "4-10" (FactBench), None for user data
    relation: str | None
    subject: str | None           # highlighted in passages; None for user data
    object: str | None            # highlighted in passages; None for user data
    relevant_ids: list[str]       # corpus ids that state the fact
    results: dict[str, MethodResult]   # per method, e.g. "trackstar", "bm25"

  MethodResult:
    reciprocal_rank: float        # 1 / rank of the first relevant, 0 if none
    proponents: list[Proponent]   # best first

  Proponent:
    rank: int                     # 1-based
    id: str                       # corpus id
    score: float                  # I(z_train, z_query), or the method's score
    text: str
    relevant: bool                # id in relevant_ids

`report.html` is one self-contained file (inline CSS and JS, no network) that
embeds the records as JSON and lets a person filter queries and compare the
proponents of two methods side by side, as the TrackStar paper's viewer does.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from trak_jax import files
from trak_jax.eval import metrics as metrics_lib

# A query "hits" at k when a relevant proponent is ranked k-th or better.
RECALL_AT = metrics_lib.K

_TEMPLATE = "report_template.html"
_REQUIRED_KEYS = {
  "query_id": str,
  "prompt": str,
  "target": str,
  "prediction": str,
  "correct": bool,
  "relevant_ids": list,
  "results": dict,
}
_OPTIONAL_STRING_KEYS = ("frequency_bucket", "relation", "subject", "object")
_PROPONENT_KEYS = {
  "rank": int,
  "id": str,
  "score": (int, float),
  "text": str,
  "relevant": bool,
}


class Proponent(TypedDict):
  """One retrieved training example (see the module docstring)."""

  rank: int
  id: str
  score: float
  text: str
  relevant: bool


class MethodResult(TypedDict):
  """One method's ranking for one query."""

  reciprocal_rank: float
  proponents: list[Proponent]


class ReportRecord(TypedDict):
  """One line of `report.jsonl`: a query and each method's proponents."""

  query_id: str
  prompt: str
  target: str
  prediction: str
  correct: bool
  frequency_bucket: str | None
  relation: str | None
  subject: str | None
  object: str | None
  relevant_ids: list[str]
  results: dict[str, MethodResult]


def _fail(where: str, message: str) -> None:
  raise ValueError(f"{where}: {message}")


def _check_type(where: str, key: str, value: Any, expected: Any) -> None:
  # bool is an int in Python; a rank or score of True is still a bad record.
  is_bool = isinstance(value, bool) and expected is not bool
  if is_bool or not isinstance(value, expected):
    _fail(where, f"{key!r} has type {type(value).__name__}")


def _check_proponent(where: str, proponent: Any) -> None:
  if not isinstance(proponent, dict):
    _fail(where, "a proponent is not an object")
  for key, expected in _PROPONENT_KEYS.items():
    if key not in proponent:
      _fail(where, f"a proponent lacks {key!r}")
    _check_type(where, key, proponent[key], expected)
  if not math.isfinite(proponent["score"]):
    _fail(
      where, f"proponent {proponent['id']!r} has score {proponent['score']}"
    )


def _check_method(where: str, result: Any) -> None:
  if not isinstance(result, dict):
    _fail(where, "is not an object")
  if "reciprocal_rank" not in result or "proponents" not in result:
    _fail(where, "needs 'reciprocal_rank' and 'proponents'")
  rr = result["reciprocal_rank"]
  _check_type(where, "reciprocal_rank", rr, (int, float))
  if not 0 <= rr <= 1:
    _fail(where, f"reciprocal_rank {rr} is not in [0, 1]")
  _check_type(where, "proponents", result["proponents"], list)
  for proponent in result["proponents"]:
    _check_proponent(where, proponent)


def check_record(record: Any, *, where: str = "record") -> None:
  """Raises ValueError, naming `where` and the field, if a record is malformed.

  Args:
    record: a decoded `report.jsonl` line.
    where: where the record came from, e.g. "report.jsonl:12".

  Raises:
    ValueError: a required field is missing or has the wrong type, or a score
      is NaN or infinite.
  """
  if not isinstance(record, dict):
    _fail(where, f"expected a JSON object, got {type(record).__name__}")
  for key, expected in _REQUIRED_KEYS.items():
    if key not in record:
      _fail(where, f"missing {key!r}")
    _check_type(where, key, record[key], expected)
  if not all(isinstance(i, str) for i in record["relevant_ids"]):
    _fail(where, "'relevant_ids' must hold strings")
  for key in _OPTIONAL_STRING_KEYS:
    if record.get(key) is not None:
      _check_type(where, key, record[key], str)
  for method, result in record["results"].items():
    _check_method(f"{where} [{record['query_id']}/{method}]", result)


def write_report_jsonl(records: Iterable[ReportRecord], path: str) -> None:
  """Writes one JSON object per query, UTF-8, creating the directory.

  Args:
    records: the report records.
    path: the output file, conventionally `<run>/report.jsonl`.

  Raises:
    ValueError: a record is malformed (nothing is left at `path` then).
  """
  lines = []
  for index, record in enumerate(records):
    check_record(record, where=f"record {index}")
    lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
  files.makedirs(os.path.dirname(files.abspath(path)))
  with files.open(path, "w", encoding="utf-8", newline="\n") as f:
    f.writelines(line + "\n" for line in lines)


def read_report_jsonl(path: str) -> list[ReportRecord]:
  """Reads and checks the records of a `report.jsonl`.

  Args:
    path: the file written by `write_report_jsonl` (or another tool).

  Returns:
    The records in file order; blank lines are skipped.

  Raises:
    ValueError: a line is not JSON or not a well-formed record; the message
      names the file and line.
  """
  records = []
  with files.open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg})") from e
      check_record(record, where=where)
      records.append(record)
  return records


def report_methods(records: Sequence[ReportRecord]) -> list[str]:
  """The methods present in any record, in order of first appearance."""
  methods = {}
  for record in records:
    methods.update(dict.fromkeys(record["results"]))
  return list(methods)


def headline(
  records: Sequence[ReportRecord],
  *,
  methods: Sequence[str] | None = None,
  k: int = RECALL_AT,
) -> dict[str, Any]:
  """Headline figures of a report, as the HTML header shows them.

  MRR@k and Recall@k (`trak_jax.eval.metrics.summarize`) average over the
  queries that have `relevant_ids` and a result for the method (a query
  without relevant ids cannot be scored).

  Args:
    records: the report records.
    methods: methods to summarise; default all, in order of appearance.
    k: the cut-off of MRR and Recall.

  Returns:
    `{"num_queries", "num_correct", "share_correct", "methods": {method:
    {"num_scored", "mrr", f"recall_at_{k}"}}}`; a mean over no queries is
    None.
  """
  methods = report_methods(records) if methods is None else list(methods)
  num_correct = sum(bool(r["correct"]) for r in records)
  graded = [r for r in records if r["relevant_ids"]]
  summary = metrics_lib.summarize(
    metrics_lib.ranking_table(graded, methods, k=k), intervals=False
  )
  mrr, recall, _ = metrics_lib.metric_names(k)
  per_method = {}
  for method in methods:
    stats = summary["all"][method]
    scored = stats[mrr]["n"]
    per_method[method] = {
      "num_scored": scored,
      "mrr": stats[mrr]["mean"] if scored else None,
      f"recall_at_{k}": stats[recall]["mean"] if scored else None,
    }
  return {
    "num_queries": len(records),
    "num_correct": num_correct,
    "share_correct": num_correct / len(records) if records else None,
    "methods": per_method,
  }


def _embed_json(value: Any) -> str:
  """JSON safe inside <script>: no `<`, `>` or `&` can end or open a tag."""
  text = json.dumps(value, ensure_ascii=False, allow_nan=False)
  for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
    text = text.replace(char, escape)
  # Legal in JSON, but line terminators in older JavaScript parsers.
  return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _template() -> str:
  return (
    importlib.resources.files("trak_jax")
    .joinpath(_TEMPLATE)
    .read_text(encoding="utf-8")
  )


def render_html(
  records: Sequence[ReportRecord],
  *,
  title: str,
  methods: Sequence[str] | None = None,
  k: int = RECALL_AT,
) -> str:
  """Renders the report as one self-contained HTML page.

  Args:
    records: the report records (checked as by `check_record`).
    title: shown in the page title and header.
    methods: methods to show, in order (the first two are compared by
      default); default all methods of the records.
    k: the cut-off of the header's MRR and Recall and of the hit filter.

  Returns:
    The HTML text: inline CSS and JS, the data embedded as JSON, and no
    reference to anything outside the file.

  Raises:
    ValueError: a record is malformed, or a method is in no record.
  """
  for index, record in enumerate(records):
    check_record(record, where=f"record {index}")
  present = report_methods(records)
  methods = present if methods is None else list(methods)
  unknown = [m for m in methods if m not in present]
  if unknown:
    raise ValueError(f"Methods {unknown} are in no record; have {present}.")
  data = {
    "title": title,
    "methods": methods,
    "recall_at": k,
    "summary": headline(records, methods=methods, k=k),
    "records": list(records),
  }
  fields = {"TITLE": html.escape(title), "DATA": _embed_json(data)}
  # One pass, so a title holding "{{DATA}}" is not substituted again.
  return re.sub(r"{{(TITLE|DATA)}}", lambda m: fields[m[1]], _template())


def write_report_html(
  records: Sequence[ReportRecord],
  path: str,
  *,
  title: str,
  methods: Sequence[str] | None = None,
  k: int = RECALL_AT,
) -> None:
  """Writes `render_html(records, ...)` to `path`, creating the directory.

  Args:
    records: the report records.
    path: the output file, conventionally `<run>/report.html`.
    title: shown in the page title and header.
    methods: as for `render_html`.
    k: as for `render_html`.
  """
  page = render_html(records, title=title, methods=methods, k=k)
  files.makedirs(os.path.dirname(files.abspath(path)))
  with files.open(path, "w", encoding="utf-8") as f:
    f.write(page)
