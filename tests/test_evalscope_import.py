"""Importing a model's answers from an EvalScope run (layout and rows of SPEC section 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from arena_engine.datasets import iter_queries
from arena_engine.errors import DatasetError, ImportMismatchError
from arena_engine.evalscope_import import ImportedAnswer, ImportIndex, load_evalscope_answers

RUN = Path(__file__).parent / "fixtures" / "evalscope_run" / "20250702_204346"
M7B, M05B = "qwen2.5-7b-instruct", "qwen2.5-0.5b-instruct"


def test_fixture_imports_answers_questions_references_usage() -> None:
    got = load_evalscope_answers(RUN / "reports" / M7B)
    assert [(a.dataset, a.subset, a.index) for a in got] == [
        ("general_qa", "arena", 0),
        ("general_qa", "arena", 1),
        ("general_qa", "arena", 2),
        ("general_qa", "example", 0),
        ("general_qa", "example", 1),
        ("general_qa", "example", 2),
    ]
    first = got[0]
    assert first == ImportedAnswer(
        model=M7B,
        dataset="general_qa",
        subset="arena",
        index=0,
        question="How can I improve my time management skills?",
        answer="Plan your day, set priorities, and limit distractions.",
        reference=None,  # the arena subset has no reference: target [""]
        prompt_tokens=18,
        completion_tokens=40,
        latency=pytest.approx(0.05),  # type: ignore[arg-type]
    )
    # an answer stored as content parts: the text part, not the reasoning part
    assert got[1].answer == "Exercise, sleep well, and talk to people you trust."
    assert (
        got[2].question == "如何提高写作能力？" and got[2].answer == "多读多写，坚持练习，并请别人给你反馈。"
    )
    example = {a.index: a for a in got if a.subset == "example"}
    assert example[0].reference == "The capital of France is Paris."
    assert example[0].answer == "Paris is the capital of France."
    assert example[2].reference == "Harper Lee wrote 'To Kill a Mockingbird'."
    assert all(a.reference is None for a in got if a.subset == "arena")
    assert (example[1].prompt_tokens, example[1].completion_tokens) == (21, 13)
    assert example[1].latency == pytest.approx(0.061)


def test_predictions_only_model_and_run_folder_with_model() -> None:
    # the 0.5b model has no reviews and no report JSON: answers from predictions; the stem
    # general_qa_example splits at the dataset name known from the run's other report
    got = load_evalscope_answers(RUN, model=M05B)
    assert {(a.dataset, a.subset) for a in got} == {("general_qa", "arena"), ("general_qa", "example")}
    assert all(a.reference is None for a in got)
    assert [a.answer for a in got if a.subset == "example"] == ["Paris? 0", "Paris? 1", "Paris? 2"]
    # the same model through its predictions folder
    assert load_evalscope_answers(RUN / "predictions" / M05B) == got
    assert load_evalscope_answers(RUN / "reviews" / M7B) == load_evalscope_answers(RUN / "reports" / M7B)


def test_run_folder_needs_a_model_when_it_has_several(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"has 2 models \(qwen2.5-0.5b-instruct, qwen2.5-7b-instruct\)"):
        load_evalscope_answers(RUN)
    with pytest.raises(DatasetError, match="no model 'gpt-x' in this run"):
        load_evalscope_answers(RUN, model="gpt-x")
    one = tmp_path / "run"
    shutil.copytree(RUN, one)
    shutil.rmtree(one / "predictions" / M05B)
    shutil.rmtree(one / "reports" / M05B)
    assert len(load_evalscope_answers(one)) == 6


def test_datasets_filter_and_hint() -> None:
    assert len(load_evalscope_answers(RUN / "reports" / M7B, datasets=["general_qa"])) == 6
    with pytest.raises(DatasetError, match="has no answers for dataset\\(s\\) 'other'"):
        load_evalscope_answers(RUN / "reports" / M7B, datasets=["general_qa", "other"])


def _copy_model(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    return run


def _rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def test_underscored_names_resolve_by_report_then_hint_then_first_underscore(tmp_path: Path) -> None:
    run = _copy_model(tmp_path)
    rows = _rows(run / "predictions" / M7B / "general_qa_example.jsonl")
    # dataset "my_data" with subset "long_form": file my_data_long_form.jsonl
    _write_rows(run / "predictions" / M7B / "my_data_long_form.jsonl", rows)
    report = orjson.loads((run / "reports" / M7B / "general_qa.json").read_bytes())
    report["dataset_name"] = "my_data"
    report["metrics"][1]["categories"][0]["subsets"][0]["name"] = "long_form"
    (run / "reports" / M7B / "my_data.json").write_bytes(orjson.dumps(report))
    pairs = {(a.dataset, a.subset) for a in load_evalscope_answers(run / "reports" / M7B)}
    assert ("my_data", "long_form") in pairs
    # without the report: the hint decides; without either: the first underscore
    (run / "reports" / M7B / "my_data.json").unlink()
    hinted = load_evalscope_answers(run / "reports" / M7B, datasets=["my_data"])
    assert {(a.dataset, a.subset) for a in hinted} == {("my_data", "long_form")}
    guessed = {(a.dataset, a.subset) for a in load_evalscope_answers(run / "reports" / M7B)}
    assert ("my", "data_long_form") in guessed and ("general_qa", "example") in guessed


def test_reviews_win_and_predictions_fill_gaps(tmp_path: Path) -> None:
    run = _copy_model(tmp_path)
    review = run / "reviews" / M7B / "general_qa_example.jsonl"
    rows = _rows(review)
    kept = [r for r in rows if r["index"] != 2]
    kept[0]["messages"][-1]["content"] = "Reviewed answer"  # type: ignore[index]
    _write_rows(review, kept)
    got = {a.index: a for a in load_evalscope_answers(run / "reports" / M7B) if a.subset == "example"}
    assert sorted(got) == [0, 1, 2]
    assert got[kept[0]["index"]].answer == "Reviewed answer"  # type: ignore[index]
    assert got[2].answer == "It was written by Harper Lee in 1960." and got[2].reference is None


def test_repeats_keep_generation_zero_keyed_by_group(tmp_path: Path) -> None:
    run = _copy_model(tmp_path)
    review = run / "reviews" / M7B / "general_qa_example.jsonl"
    rows = sorted(_rows(review), key=lambda r: r["index"])  # type: ignore[arg-type,return-value]
    repeated = []
    for r in rows:
        for gen in (0, 1):
            row = orjson.loads(orjson.dumps(r))
            row["index"] = r["index"] * 2 + gen  # type: ignore[operator]
            row["sample_score"]["generation_index"] = gen
            row["sample_score"]["sample_id"] = row["index"]
            if gen:
                row["messages"][-1]["content"] = "second sample"
            repeated.append(row)
    _write_rows(review, repeated)
    shutil.rmtree(run / "predictions" / M7B)
    got = [a for a in load_evalscope_answers(run / "reports" / M7B) if a.subset == "example"]
    assert [a.index for a in got] == [0, 1, 2]
    assert "second sample" not in {a.answer for a in got}


def test_older_review_rows_with_input_and_prediction(tmp_path: Path) -> None:
    run = tmp_path / "out"
    _write_rows(
        run / "reviews" / "m" / "general_qa_example.jsonl",
        [
            {
                "index": 0,
                "input": "What is 2+2?",
                "target": "4",
                "sample_score": {"score": {"value": {"acc": 1}, "prediction": "It is 4."}, "sample_id": 0},
            }
        ],
    )
    (a,) = load_evalscope_answers(run / "reviews" / "m")
    assert (a.question, a.answer, a.reference, a.prompt_tokens, a.latency) == (
        "What is 2+2?",
        "It is 4.",
        "4",
        None,
        None,
    )


BAD_ROWS = [
    (b"{oops", r":2: json: invalid JSON"),
    (b"[1]", r":2: row: expected a JSON object"),
    (b'{"messages": []}', r":2: index: missing"),
    (b'{"index": "3", "messages": []}', r":2: index: expected a non-negative integer, got '3'"),
    (
        b'{"index": 0, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        r":2: index: duplicate index 0 \(first on line 1\)",
    ),
    (b'{"index": 5, "messages": [{"role": "user", "content": "q"}]}', r":2: messages: no assistant message"),
    (b'{"index": 5, "messages": [{"role": "assistant", "content": "a"}]}', r":2: messages: no user message"),
    (b'{"index": 5, "messages": {"role": "user"}}', r":2: messages: expected a list"),
    (
        b'{"index": 5, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 7}]}',
        r":2: messages\[1\]\.content: expected a string or a list",
    ),
    (
        b'{"index": 5, "target": 3, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        r":2: target: expected a string or a list",
    ),
    (
        b'{"index": 5, "model_output": {"usage": {"input_tokens": -1}}, "messages": [{"role": "user", "content": "q"}, '
        b'{"role": "assistant", "content": "a"}]}',
        r":2: model_output\.usage\.input_tokens",
    ),
]


@pytest.mark.parametrize(("line", "problem"), BAD_ROWS, ids=[p for _, p in BAD_ROWS])
def test_bad_rows_name_file_line_field(tmp_path: Path, line: bytes, problem: str) -> None:
    path = tmp_path / "run" / "predictions" / "m" / "general_qa_arena.jsonl"
    path.parent.mkdir(parents=True)
    good = (
        b'{"index": 0, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    )
    path.write_bytes(good + b"\n" + line + b"\n")
    with pytest.raises(DatasetError, match=problem) as info:
        load_evalscope_answers(path.parent)
    assert str(path) in str(info.value)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_evalscope_answers(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="neither an EvalScope reports/<model> folder nor a run folder"):
        load_evalscope_answers(tmp_path / "plain")
    (tmp_path / "run" / "reports" / "m").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no reviews/m/\*\.jsonl nor predictions/m/\*\.jsonl"):
        load_evalscope_answers(tmp_path / "run" / "reports" / "m")
    (tmp_path / "run" / "reviews" / "m").mkdir(parents=True)
    (tmp_path / "run" / "reviews" / "m" / "x_y.jsonl").write_text("{}\n")
    (tmp_path / "run" / "reports" / "m" / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"x\.json: invalid JSON"):
        load_evalscope_answers(tmp_path / "run" / "reports" / "m")


# ------------------------------------------------------------------ pairing rows with queries by content

def _dataset(folder: Path, subsets: dict[str, list[dict[str, object]]]) -> Path:
    for subset, records in subsets.items():
        _write_rows(folder / f"{subset}.jsonl", records)
    return folder


def _index(rows: list[ImportedAnswer], folder: Path) -> ImportIndex:
    return ImportIndex.build(rows, iter_queries(folder, dataset="general_qa"))


def _row(index: int, question: str, answer: str, *, subset: str = "example", line: int = 0,
         context: tuple[tuple[str, str], ...] | None = ()) -> ImportedAnswer:
    return ImportedAnswer(model="m", dataset="general_qa", subset=subset, index=index, question=question,
                          answer=answer, reference=None, prompt_tokens=None, completion_tokens=None, latency=None,
                          context=context, source="run/reviews/m/general_qa_example.jsonl", line=line or index + 1)


def _answers(index: ImportIndex, folder: Path) -> dict[str, str | None]:
    return {q.question: (a.answer if (a := index.find(q)) else None)
            for q in iter_queries(folder, dataset="general_qa")}


def test_shuffled_rows_pair_with_their_questions_not_their_positions(tmp_path: Path) -> None:
    rows = load_evalscope_answers(RUN / "reports" / M7B)
    by_question = {(a.subset, a.question): a.answer for a in rows}
    # the dataset holds the same questions in another order than the EvalScope run's indices
    data = _dataset(tmp_path / "general_qa", {
        sub: [{"query": a.question} for a in sorted((a for a in rows if a.subset == sub), key=lambda a: -a.index)]
        for sub in ("arena", "example")
    })
    index = _index(rows, data)
    assert index.unmatched == () and len(index) == 6
    index.check("error")  # nothing to report
    for q in iter_queries(data, dataset="general_qa"):
        found = index.find(q)
        assert found is not None and found.answer == by_question[(q.subset, q.question)]
    # the row index alone would have paired query 0 with the row of index 0
    q0 = next(iter_queries(data, dataset="general_qa", subsets=["example"]))
    assert q0.id == "0" and index.find(q0) is not None and index.find(q0).index == 2  # type: ignore[union-attr]


def test_a_row_matching_no_query_is_an_error_naming_file_line_and_both_texts(tmp_path: Path) -> None:
    rows = load_evalscope_answers(RUN / "reports" / M7B)
    data = _dataset(tmp_path / "general_qa", {
        "arena": [{"query": a.question} for a in rows if a.subset == "arena"],
        "example": [{"query": "What is the largest mammal in the world?"}, {"query": "What is the capital of France?"},
                    {"query": "How does photosynthesis work?"}],
    })
    index = _index(rows, data)
    (miss,) = index.unmatched
    assert miss.row.answer == "It was written by Harper Lee in 1960."
    assert index.counts() == {("general_qa", "example"): 1} and index.rows == 6
    with pytest.raises(ImportMismatchError) as info:
        index.check("error", model="qwen")
    message = str(info.value)
    review = RUN / "reviews" / M7B / "general_qa_example.jsonl"
    assert f"{review}:3: question:" in message  # the Mockingbird row is line 3 of the review file
    assert "\"Who wrote 'To Kill a Mockingbird'?\"" in message
    assert "the dataset's question at index 2 (id '2', line 3) is 'How does photosynthesis work?'" in message
    assert "evalscope_mismatch" in message and "model 'qwen'" in message
    # the photosynthesis query gets no answer (it stays missing), the others get theirs
    assert _answers(index, data)["How does photosynthesis work?"] is None
    assert _answers(index, data)["What is the largest mammal in the world?"] == "The blue whale is the largest mammal."


def test_warn_mode_logs_counts_once_and_skips_the_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [_row(0, "A?", "a"), _row(1, "B?", "b"), _row(2, "C?", "c"), _row(0, "D?", "d", subset="other")]
    data = _dataset(tmp_path / "general_qa", {"example": [{"query": "B?"}, {"query": "X?"}, {"query": "Y?"}],
                                              "other": [{"query": "Z?"}]})
    index = _index(rows, data)
    with caplog.at_level("WARNING", logger="arena_engine.evalscope_import"):
        index.check("warn", model="qwen")
    (record,) = caplog.records
    text = record.getMessage()
    assert "model 'qwen': 3 of 4 imported EvalScope row(s) match no query and are skipped" in text
    assert "(general_qa/example: 2, general_qa/other: 1)" in text
    assert "run/reviews/m/general_qa_example.jsonl:1: question: 'A?'" in text
    assert _answers(index, data) == {"B?": "b", "X?": None, "Y?": None, "Z?": None}


def test_whitespace_is_normalised_but_case_and_wording_are_not(tmp_path: Path) -> None:
    rows = [_row(0, "  What is\r\n the  capital\tof France?\n", "Paris"), _row(1, "what is 2+2?", "4"),
            _row(2, "Caf\u0065\u0301?", "coffee")]
    data = _dataset(tmp_path / "general_qa", {"example": [
        {"query": "What is the capital of France?"}, {"query": "What is 2+2?"}, {"query": "Caf\u00e9?"}]})
    index = _index(rows, data)
    assert _answers(index, data) == {"What is the capital of France?": "Paris", "What is 2+2?": None,
                                     "Caf\u00e9?": "coffee"}
    assert [u.row.answer for u in index.unmatched] == ["4"]


def test_duplicate_questions_use_the_index_as_tie_breaker(tmp_path: Path) -> None:
    # "Hi" at EvalScope indices 0, 2, 3; the dataset has "Hi" at positions 1, 2 and 3
    rows = [_row(0, "Hi", "first"), _row(1, "Bye", "bye"), _row(2, "Hi", "second"), _row(3, "Hi", "third")]
    data = _dataset(tmp_path / "general_qa", {"example": [{"query": "Bye"}, {"query": "Hi"}, {"query": "Hi"},
                                                          {"query": "Hi"}]})
    index = _index(rows, data)
    got = {q.id: index.find(q).answer for q in iter_queries(data, dataset="general_qa")}  # type: ignore[union-attr]
    # same position first (2 -> second, 3 -> third), then the rest in index order (1 -> first)
    assert got == {"0": "bye", "1": "first", "2": "second", "3": "third"}
    assert index.unmatched == ()
    # a row whose index is a query's position goes to that query even when a lower-index row is left
    later = _dataset(tmp_path / "later", {"example": [{"query": "Bye"}, {"query": "New"}, {"query": "Hi"},
                                                      {"query": "Hi"}]})
    index = ImportIndex.build(rows[:3], iter_queries(later, dataset="general_qa"))
    got = {q.id: a.answer for q in iter_queries(later, dataset="general_qa") if (a := index.find(q))}
    assert got == {"0": "bye", "2": "second", "3": "first"}
    # one "Hi" fewer in the dataset: the surplus row is unmatched, and says why
    fewer = _dataset(tmp_path / "fewer", {"example": [{"query": "Bye"}, {"query": "Hi"}, {"query": "Hi"}]})
    index = ImportIndex.build(rows, iter_queries(fewer, dataset="general_qa"))
    (miss,) = index.unmatched
    assert miss.row.answer == "third" and "already has an answer" in miss.reason
    assert "the dataset has no query at index 3" in miss.reason


def test_system_prompt_and_earlier_turns_are_part_of_the_match(tmp_path: Path) -> None:
    rows = [_row(0, "Q?", "terse", context=(("system", "Be terse."),)),
            _row(1, "Q?", "plain"),
            _row(2, "And then?", "then", context=(("user", "Start"), ("assistant", "Started"))),
            _row(3, "Old?", "old", context=None)]  # an older row: its context is unknown, the question decides
    data = _dataset(tmp_path / "general_qa", {"example": [
        {"query": "Q?"},
        {"query": "Q?", "system": "Be  terse."},
        {"messages": [{"role": "user", "content": "Start"}, {"role": "assistant", "content": "Started"},
                      {"role": "user", "content": "And then?"}]},
        {"query": "Old?", "system": "Anything"},
    ]})
    index = _index(rows, data)
    got = {q.id: index.find(q).answer for q in iter_queries(data, dataset="general_qa")}  # type: ignore[union-attr]
    assert got == {"0": "plain", "1": "terse", "2": "then", "3": "old"}
    # the system prompt differs: the question alone does not pair them
    other = _dataset(tmp_path / "other", {"example": [{"query": "Q?", "system": "Be verbose."}]})
    index = ImportIndex.build([rows[0]], iter_queries(other, dataset="general_qa"))
    (miss,) = index.unmatched
    assert "query '0' (line 1) has this question, but its system prompt / earlier messages are " \
           "[system: 'Be verbose.'], the row's are [system: 'Be terse.']" in miss.reason


def test_rows_carry_their_file_line_and_context(tmp_path: Path) -> None:
    run = tmp_path / "out"
    path = run / "reviews" / "m" / "general_qa_example.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": [{"type": "text", "text": "Bye"}]}]
    _write_rows(path, [
        {"index": 1, "messages": [*chat, {"role": "assistant", "content": "Goodbye"}]},
        # the answer is in model_output: the assistant message in the messages is an earlier turn
        {"index": 0, "messages": chat, "model_output": {"choices": [{"message": {"content": "See you"}}]}},
    ])
    got = {a.index: a for a in load_evalscope_answers(run / "reviews" / "m")}
    assert (got[1].source, got[1].line, got[0].line) == (str(path), 1, 2)
    assert got[1].question == "Bye" and got[1].answer == "Goodbye"
    assert got[1].context == (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
    assert got[0].answer == "See you" and got[0].context == got[1].context
