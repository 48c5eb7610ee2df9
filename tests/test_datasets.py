"""Dataset folders: what a user writes in JSONL and what the engine sends and reports."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import orjson
import pytest

from arena_engine.datasets import Query, iter_queries, list_subsets
from arena_engine.errors import ArenaError, DatasetError


def write(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def lines(*records: object) -> str:
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def test_spec_example_folder(tmp_path: Path) -> None:
    qa = tmp_path / "qa"
    write(
        qa,
        "arena.jsonl",
        lines(
            {"query": "How can I improve my time management skills?"},
            {"query": "What is the capital of France?", "response": "The capital of France is Paris."},
        ),
    )
    write(qa, "another.jsonl", lines({"question": "Why?", "answer": "Because.", "id": 7}))
    write(qa, "notes.txt", "not a subset")
    assert list_subsets(qa) == ["another", "arena"]
    got = list(iter_queries(qa))
    assert got == [
        Query("qa", "another", "7", ({"role": "user", "content": "Why?"},), "Why?", "Because.", 1),
        Query(
            "qa",
            "arena",
            "0",
            ({"role": "user", "content": "How can I improve my time management skills?"},),
            "How can I improve my time management skills?",
            None,
            1,
        ),
        Query(
            "qa",
            "arena",
            "1",
            ({"role": "user", "content": "What is the capital of France?"},),
            "What is the capital of France?",
            "The capital of France is Paris.",
            2,
        ),
    ]


def test_system_and_messages(tmp_path: Path) -> None:
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    write(
        tmp_path / "d",
        "s.jsonl",
        lines(
            {"query": "2+2?", "system": "Be brief."},
            {"messages": chat, "system": "Be funny.", "id": "joke"},
            {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]},
            {"messages": chat, "query": "a joke please"},
        ),
    )
    a, b, c, d = iter_queries(tmp_path / "d", dataset="mine")
    assert a.dataset == "mine"
    assert a.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"})
    assert b.id == "joke"
    assert b.messages == ({"role": "system", "content": "Be funny."}, *chat)
    assert b.question == "Tell me a joke"
    assert c.messages[0] == {"role": "system", "content": "S"} and c.question == "Q"
    assert d.question == "a joke please" and d.messages == tuple(chat)


def test_bom_crlf_blank_lines_keep_true_line_numbers(tmp_path: Path) -> None:
    body = '{"query": "un"}\r\n\r\n   \r\n{"query": "deux", "response": "zwei"}\r\n\n{"query": "trois"}'
    write(tmp_path / "d", "x.jsonl", b"\xef\xbb\xbf" + body.encode())
    got = list(iter_queries(tmp_path / "d"))
    assert [(q.question, q.id, q.line) for q in got] == [("un", "0", 1), ("deux", "1", 4), ("trois", "2", 6)]
    assert got[1].reference == "zwei"
    # an error after blank lines names the true line
    write(tmp_path / "e", "x.jsonl", b"\xef\xbb\xbf" + b'{"query": "a"}\r\n\r\n{"query": ""}\r\n')
    with pytest.raises(DatasetError, match=r"x\.jsonl:3: query: empty text"):
        list(iter_queries(tmp_path / "e"))


def test_chinese_text_round_trips(tmp_path: Path) -> None:
    write(tmp_path / "zh", "s.jsonl", lines({"query": "法国的首都是哪里？", "response": "巴黎。"}))
    (q,) = iter_queries(tmp_path / "zh")
    assert (q.question, q.reference) == ("法国的首都是哪里？", "巴黎。")


def test_subset_selection_and_order(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / "d", f"{name}.jsonl", lines({"query": name}))
    got = [q.subset for q in iter_queries(tmp_path / "d", subsets=["c", "a", "c"])]
    assert got == ["c", "a"]
    with pytest.raises(DatasetError, match=r"'zz' not found; available: a, b, c"):
        list(iter_queries(tmp_path / "d", subsets=["a", "zz"]))


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        list_subsets(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no \.jsonl files"):
        list_subsets(tmp_path / "empty")
    with pytest.raises(DatasetError):
        list(iter_queries(tmp_path / "empty"))
    assert issubclass(DatasetError, ArenaError)


def test_single_file_is_a_one_subset_dataset(tmp_path: Path) -> None:
    f = write(tmp_path / "qa", "arena.jsonl", lines({"query": "q"}))
    assert list_subsets(f) == ["arena"]
    (q,) = iter_queries(f)
    assert (q.dataset, q.subset) == ("qa", "arena")


BAD = [
    ("{not json", r"json: invalid JSON"),
    ("[1, 2]", r"record: expected a JSON object, got a list"),
    ('{"response": "r"}', r"query: missing"),
    ('{"query": 3}', r"query: expected a string, got a number"),
    ('{"question": "  "}', r"question: empty text"),
    ('{"query": "a", "question": "b"}', r"question: `query` and `question` both given and differ"),
    ('{"query": "a", "response": ["x"]}', r"response: expected a string, got a list"),
    ('{"query": "a", "answer": ""}', r"answer: empty text"),
    ('{"query": "a", "system": null}', r"system: expected a string, got null"),
    ('{"query": "a", "id": 1.5}', r"id: expected a string or an integer, got a number"),
    ('{"query": "a", "id": true}', r"id: expected a string or an integer, got a boolean"),
    ('{"query": "a", "id": ""}', r"id: empty id"),
    ('{"messages": "hi"}', r"messages: expected a list of messages, got a string"),
    ('{"messages": []}', r"messages: empty list"),
    ('{"messages": ["hi"]}', r"messages\[0\]: expected an object, got a string"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"messages\[0\]\.role: unknown role 'robot'"),
    ('{"messages": [{"content": "x"}]}', r"messages\[0\]\.role: expected a string, got null"),
    ('{"messages": [{"role": "user", "content": 5}]}', r"messages\[0\]\.content: expected a string"),
    ('{"messages": [{"role": "user", "content": ""}]}', r"messages\[0\]\.content: empty text"),
    (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        r"messages: the last message must be the user's",
    ),
    (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, '
        '{"role": "user", "content": "q"}]}',
        r"messages\[1\]\.role: a system message may only come first",
    ),
    (
        '{"system": "s", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}',
        r"system: given both as a field and as the first message",
    ),
]


@pytest.mark.parametrize(("line", "problem"), BAD, ids=[p for _, p in BAD])
def test_bad_line_names_file_line_field(tmp_path: Path, line: str, problem: str) -> None:
    write(tmp_path / "d", "sub.jsonl", '{"query": "fine"}\n\n' + line + "\n")
    it = iter_queries(tmp_path / "d")
    assert next(it).question == "fine"  # streaming: good lines come out before the bad one is read
    with pytest.raises(DatasetError) as info:
        next(it)
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "d" / "sub.jsonl") + ":3: "), msg
    assert re.search(problem, msg), msg


def test_invalid_utf8_is_a_dataset_error(tmp_path: Path) -> None:
    write(tmp_path / "d", "s.jsonl", b'{"query": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"s\.jsonl:1: json: invalid JSON"):
        list(iter_queries(tmp_path / "d"))


def test_duplicate_ids(tmp_path: Path) -> None:
    write(
        tmp_path / "d",
        "a.jsonl",
        lines({"query": "x", "id": 5}, {"query": "y", "id": "k"}, {"query": "z", "id": "5"}),
    )
    with pytest.raises(DatasetError, match=r"a\.jsonl:3: id: duplicate id '5' \(first used on line 1\)"):
        list(iter_queries(tmp_path / "d"))
    # an explicit id colliding with a default (index) id is a duplicate too
    write(tmp_path / "e", "a.jsonl", lines({"query": "x"}, {"query": "y", "id": 0}))
    with pytest.raises(DatasetError, match=r"a\.jsonl:2: id: duplicate id '0'"):
        list(iter_queries(tmp_path / "e"))
    # the same id in two subsets is fine
    write(tmp_path / "f", "a.jsonl", lines({"query": "x", "id": 1}))
    write(tmp_path / "f", "b.jsonl", lines({"query": "y", "id": 1}))
    assert [q.id for q in iter_queries(tmp_path / "f")] == ["1", "1"]


def test_streams_without_reading_the_whole_file(tmp_path: Path) -> None:
    # a huge file whose tail is garbage: taking the first queries must not touch the tail
    path = tmp_path / "big" / "s.jsonl"
    path.parent.mkdir()
    with path.open("wb") as fh:
        for i in range(20_000):
            fh.write(b'{"query": "q%d"}\n' % i)
        fh.write(b"garbage\n")
    first = list(itertools.islice(iter_queries(tmp_path / "big"), 3))
    assert [q.question for q in first] == ["q0", "q1", "q2"]
    with pytest.raises(DatasetError, match=r":20001: json"):
        for _ in iter_queries(tmp_path / "big"):
            pass


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "d", "s.jsonl", lines({"query": "q", "category": "math", "meta": {"x": 1}}))
    (q,) = iter_queries(tmp_path / "d")
    assert q.question == "q"


def test_an_empty_subset_is_an_error_naming_dataset_subset_and_path(tmp_path: Path) -> None:
    qa = tmp_path / "qa"
    write(qa, "full.jsonl", lines({"query": "q"}))
    empty = write(qa, "hollow.jsonl", "\n  \r\n")  # blank lines only: no query
    with pytest.raises(DatasetError) as err:
        list(iter_queries(qa, dataset="general"))
    msg = str(err.value)
    assert "dataset 'general'" in msg and "subset 'hollow'" in msg and str(empty) in msg
    assert "allow_empty = true" in msg  # says how to make it a warning
    # a subset list naming the empty subset, and an empty subset list, are errors too
    with pytest.raises(DatasetError, match="subset 'hollow'"):
        list(iter_queries(qa, subsets=["full", "hollow"]))
    with pytest.raises(DatasetError, match="the list of subsets is empty"):
        list(iter_queries(qa, subsets=[]))
    # the subset list without it is fine
    assert [q.subset for q in iter_queries(qa, subsets=["full"])] == ["full"]
    write(tmp_path / "one", "zero.jsonl", b"")
    with pytest.raises(DatasetError, match=r"dataset 'one', subset 'zero': .*zero\.jsonl holds no queries"):
        list(iter_queries(tmp_path / "one" / "zero.jsonl"))


def test_a_dataset_folder_without_subset_files_is_an_error_naming_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    write(tmp_path / "bare", "notes.txt", "not a subset")
    with pytest.raises(DatasetError, match=rf"dataset 'mine': {re.escape(str(tmp_path / 'bare'))} has no \.jsonl"):
        list(iter_queries(tmp_path / "bare", dataset="mine"))


def test_allow_empty_skips_empty_subsets_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    qa = tmp_path / "qa"
    write(qa, "a.jsonl", lines({"query": "one"}))
    write(qa, "b.jsonl", "")
    (tmp_path / "bare").mkdir()
    with caplog.at_level("WARNING", logger="arena_engine.datasets"):
        for _ in range(3):  # the engine reads a dataset more than once (count, then run): one warning
            assert [q.question for q in iter_queries(qa, allow_empty=True)] == ["one"]
            assert list(iter_queries(tmp_path / "bare", allow_empty=True)) == []
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned
    assert "subset 'b'" in warned[0] and "allow_empty" in warned[0]
    assert "has no .jsonl files" in warned[1]
