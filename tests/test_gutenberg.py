"""Gutenberg downloader (minigriffin.gutenberg) against a local HTTP server: never the internet.

The server serves a temp folder laid out like gutenberg.org (cache/epub/{id}/pg{id}.txt) holding a few small
invented Gutenberg-style files (a made-up header, a few made-up lines, a made-up footer), not book text.
Every request has a 5 s timeout and `sleep` is a no-op, so each test ends within seconds.
"""

import csv
import hashlib
import http.server
import re
import socket
import threading
from functools import partial

import numpy as np
import pytest

from minigriffin import gutenberg
from minigriffin.data import load_corpus
from minigriffin.gutenberg import BOOKS, NONFICTION, URL_PATTERN, download_books, strip_gutenberg

# Real ids from BOOKS (so the train/valid assignment is known), served with invented text.
TRAIN_A, TRAIN_B, VALID, ESSAYS = 84, 1342, 33, 2944
ESSAYS_BODY = "HISTORY\n\nThere is one mind common to all individual men.\n"    # served, never in BODIES
BODIES = {
    TRAIN_A: "Chapter 1\n\nA lamp hummed in the workshop.\nNobody came to fix it.\n",
    TRAIN_B: "  PART ONE\n\nThe kettle argued with the stove all morning.\n",
    VALID: "Chapter I\n\nThe harbour was quiet, and the gulls were not.\n",
}


def _fake_gutenberg(gid, body, newline="\r\n", start=True, end=True):
    """An invented file in Project Gutenberg's layout: header, START line, body, END line, licence."""
    lines = ["\ufeffThe Project Gutenberg eBook of Something Invented", "", "Release date: never", ""]
    if start:
        lines += [f"*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING INVENTED {gid} ***", "", ""]
    lines += body.rstrip("\n").split("\n")
    lines += ["", "", f"End of the Project Gutenberg EBook of Something Invented {gid}", ""]
    if end:
        lines += [f"*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING INVENTED {gid} ***", ""]
    lines += ["Updated editions will replace the previous one.", "START: FULL LICENSE"]
    return newline.join(lines).encode("utf-8")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site folder; counts requests; answers 503 to the first `fail_first` of them."""

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
            fail = len(server.requests) <= server.fail_first
        if fail:
            self.send_error(503, "Service Unavailable")
            return
        super().do_GET()

    def log_message(self, *args):   # keep pytest output clean
        pass


@pytest.fixture
def site(tmp_path):
    """A local Gutenberg: (base_url, server, site folder). server.requests lists the paths asked for."""
    root = tmp_path / "site"
    for gid, body in {**BODIES, ESSAYS: ESSAYS_BODY}.items():
        path = root / "cache" / "epub" / str(gid) / f"pg{gid}.txt"
        path.parent.mkdir(parents=True)
        path.write_bytes(_fake_gutenberg(gid, body))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.lock, server.requests, server.fail_first = threading.Lock(), [], 0
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server, root
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _download(base_url, out, ids=(TRAIN_A, TRAIN_B, VALID), **kwargs):
    sleeps = []
    kwargs = {"retries": 2, "timeout": 5, "sleep": sleeps.append} | kwargs
    return download_books(out, ids=list(ids), base_url=base_url, **kwargs), sleeps


def _manifest(folder):
    with open(folder / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        return {int(row["gutenberg_id"]): row for row in csv.DictReader(f, delimiter="\t")}


def test_books_list():
    ids = [b.gutenberg_id for b in BOOKS]
    assert len(ids) == len(set(ids)) == 31
    assert all(b.year < 1919 and b.split in ("train", "valid") for b in BOOKS)
    assert sum(b.split == "valid" for b in BOOKS) == 5
    train_authors = {b.author for b in BOOKS if b.split == "train"}
    assert train_authors.isdisjoint(b.author for b in BOOKS if b.split == "valid")


def test_books_list_matches_shared_manifests(books_dir):
    for split in ("train", "valid"):
        with open(books_dir / split / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        expected = [(int(r["gutenberg_id"]), r["title"], r["author"], int(r["first_published_year"]), split)
                    for r in rows]
        assert [tuple(b) for b in BOOKS if b.split == split] == expected


def test_download_strips_and_lays_out(site, tmp_path):
    base_url, server, _ = site
    out, sleeps = _download(base_url, tmp_path / "out")
    assert out == tmp_path / "out" and sleeps == []
    assert sorted(server.requests) == sorted(f"/cache/epub/{g}/pg{g}.txt" for g in BODIES)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["1342.txt", "84.txt", "MANIFEST.tsv"]
    assert sorted(p.name for p in (out / "valid").iterdir()) == ["33.txt", "MANIFEST.tsv"]
    for gid, body in BODIES.items():
        split = "valid" if gid == VALID else "train"
        raw = (out / split / f"{gid}.txt").read_bytes()
        # header, START/END lines, the "End of the Project Gutenberg EBook" line, licence and BOM all gone;
        # \r\n -> \n; blank lines trimmed at both ends; the body's own indentation kept
        assert raw == body.encode("utf-8")
        row = _manifest(out / split)[gid]
        assert row["sha256"] == hashlib.sha256(raw).hexdigest()
        assert int(row["bytes"]) == len(raw) and int(row["chars"]) == len(raw.decode("utf-8"))
        assert row["source_url"] == URL_PATTERN.format(base_url=base_url, id=gid)
        assert row["title"] == next(b.title for b in BOOKS if b.gutenberg_id == gid)
    corpus = load_corpus(out, cache_dir=tmp_path / "cache")   # what the downloader writes, the loader reads
    assert sorted(corpus.train.names) == ["1342.txt", "84.txt"] and corpus.valid.names == ("33.txt",)
    np.testing.assert_array_equal(np.diff(corpus.valid.doc_starts), [len(BODIES[VALID].encode())])


def test_nonfiction_books_are_an_evaluation_domain_of_their_own(site, tmp_path):
    """download --nonfiction writes into <out>/nonfiction with its own manifest, which load_eval_books reads;
    none of its authors is in the training or validation books."""
    from minigriffin.data import load_eval_books
    assert {b.author for b in NONFICTION}.isdisjoint(b.author for b in BOOKS)
    assert all(b.split == "nonfiction" for b in NONFICTION) and ESSAYS in {b.gutenberg_id for b in NONFICTION}
    base_url, server, _ = site
    out, _ = _download(base_url, tmp_path / "out", ids=[ESSAYS], nonfiction=True)
    assert sorted(p.name for p in (out / "nonfiction").iterdir()) == ["2944.txt", "MANIFEST.tsv"]
    assert not (out / "train").exists() and not (out / "valid").exists()
    assert _manifest(out / "nonfiction")[ESSAYS]["author"] == "Ralph Waldo Emerson"
    split = load_eval_books(out / "nonfiction", cache_dir=tmp_path / "cache")
    assert split.names == ("2944.txt",) and int(split.doc_starts[-1]) == len(ESSAYS_BODY.encode())


def test_second_call_skips_matching_files(site, tmp_path):
    base_url, server, _ = site
    out, _ = _download(base_url, tmp_path / "out")
    n = len(server.requests)
    _download(base_url, out)
    assert len(server.requests) == n                 # checksums match: no network at all
    (out / "train" / "84.txt").write_text("tampered\n")
    _download(base_url, out)
    assert server.requests[n:] == ["/cache/epub/84/pg84.txt"]   # only the changed file is fetched again
    assert (out / "train" / "84.txt").read_text() == BODIES[TRAIN_A]
    assert set(_manifest(out / "train")) == {TRAIN_A, TRAIN_B}   # rows of other books are kept


def test_retries_after_503_with_backoff(site, tmp_path):
    base_url, server, _ = site
    server.fail_first = 3
    out, sleeps = _download(base_url, tmp_path / "out", ids=[VALID], retries=3)
    assert server.requests == ["/cache/epub/33/pg33.txt"] * 4
    assert sleeps == [gutenberg.BACKOFF_S, 2 * gutenberg.BACKOFF_S, 4 * gutenberg.BACKOFF_S]   # exponential
    assert (out / "valid" / "33.txt").read_text() == BODIES[VALID]


def test_persistent_503_gives_up(site, tmp_path):
    base_url, server, _ = site
    server.fail_first = 100
    with pytest.raises(RuntimeError, match=r"pg33\.txt still answered HTTP 503 .* after 3 attempts"):
        _download(base_url, tmp_path / "out", ids=[VALID], retries=2)
    assert len(server.requests) == 3
    assert not (tmp_path / "out" / "valid" / "33.txt").exists()


def test_404_is_not_retried(site, tmp_path):
    base_url, server, root = site
    (root / "cache" / "epub" / "33" / "pg33.txt").unlink()
    with pytest.raises(RuntimeError, match=r"pg33\.txt answered HTTP 404"):
        _download(base_url, tmp_path / "out", ids=[VALID])
    assert len(server.requests) == 1


@pytest.mark.parametrize(("marker", "message"), [("start", "no '\\*\\*\\* START OF"), ("end", "no '\\*\\*\\* END OF")])
def test_missing_marker_names_the_book(site, tmp_path, marker, message):
    base_url, _, root = site
    (root / "cache" / "epub" / "33" / "pg33.txt").write_bytes(
        _fake_gutenberg(VALID, BODIES[VALID], start=marker != "start", end=marker != "end"))
    with pytest.raises(ValueError, match=rf"Gutenberg book 33 \(The Scarlet Letter\) from .*pg33\.txt: {message}"):
        _download(base_url, tmp_path / "out", ids=[VALID])
    assert not (tmp_path / "out" / "valid" / "33.txt").exists()


def test_offline_message(tmp_path):
    with socket.socket() as s:                       # a port on which nothing listens any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    sleeps = []
    with pytest.raises(RuntimeError) as info:
        download_books(tmp_path / "out", ids=[VALID], base_url=base_url, retries=2, timeout=5, sleep=sleeps.append)
    message = str(info.value)
    assert f"{base_url}/cache/epub/33/pg33.txt" in message
    assert "after 3 attempts" in message and "seems to be offline" in message and "--data-dir PATH" in message
    assert len(sleeps) == 2


def test_unknown_id(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Gutenberg ids \[999999\]"):
        download_books(tmp_path / "out", ids=[999999], base_url="http://127.0.0.1:9", sleep=lambda s: None)


def test_default_out_dir_is_the_user_cache(site, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGRIFFIN_CACHE", str(tmp_path / "cache"))
    out, _ = _download(site[0], None, ids=[VALID])
    assert out == tmp_path / "cache" / "books" and (out / "valid" / "33.txt").is_file()


def test_strip_gutenberg_variants():
    old_style = ("header\r***START OF THIS PROJECT GUTENBERG EBOOK X***\r\rline one\rline two\r\r"
                 "***END OF THIS PROJECT GUTENBERG EBOOK X***\rlicence")   # old Mac line ends, no spaces
    assert strip_gutenberg(old_style) == "line one\nline two\n"
    possessive = ("*** START OF THE PROJECT GUTENBERG EBOOK X ***\nA made-up line.\n\n"
                  "End of Project Gutenberg's Made-Up Title, by Nobody\n\n"
                  "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n")
    assert strip_gutenberg(possessive) == "A made-up line.\n"
    with pytest.raises(ValueError, match=re.escape("my book: no text between")):
        strip_gutenberg("*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n"
                        "*** END OF THE PROJECT GUTENBERG EBOOK X ***", name="my book")
