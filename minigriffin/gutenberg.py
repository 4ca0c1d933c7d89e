"""Download the books corpus from Project Gutenberg: long public-domain English books published before 1919.

The list is the one behind the books corpus the results in docs/ were measured on (the PG-19 cut-off year, split by book and by author into
train and valid). `download_books` fetches each plain-text edition, strips Project Gutenberg's header and
footer, and writes `out/train/<id>.txt` and `out/valid/<id>.txt` plus a `MANIFEST.tsv` (with sha256) in each
folder, which `minigriffin.data.load_corpus(out)` reads. Files already there with a matching checksum are
not downloaded again. Offline? Use any folder of .txt files instead (`--data-dir PATH`); `resolve_data_dir`
is how the commands choose between the two.
"""

import csv
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from minigriffin.data import default_cache_dir
from minigriffin.files import atomic_write

logger = logging.getLogger(__name__)

GUTENBERG_URL = "https://www.gutenberg.org"
URL_PATTERN = "{base_url}/cache/epub/{id}/pg{id}.txt"   # Project Gutenberg's generated UTF-8 plain text
USER_AGENT = "minigriffin-downloader (educational; https://www.gutenberg.org/policy/robot_access.html)"
BACKOFF_S = 1.0                                           # first retry waits 1 s, then 2 s, 4 s, ...
MANIFEST_COLUMNS = ("gutenberg_id", "title", "author", "first_published_year", "chars", "bytes", "sha256",
                    "source_url")


class Book(NamedTuple):
    gutenberg_id: int
    title: str
    author: str
    year: int       # first published
    split: str      # "train" or "valid"; no author is in both


BOOKS = (
    Book(1023, "Bleak House", "Charles Dickens", 1853, "train"),
    Book(1400, "Great Expectations", "Charles Dickens", 1861, "train"),
    Book(766, "David Copperfield", "Charles Dickens", 1850, "train"),
    Book(1342, "Pride and Prejudice", "Jane Austen", 1813, "train"),
    Book(158, "Emma", "Jane Austen", 1815, "train"),
    Book(141, "Mansfield Park", "Jane Austen", 1814, "train"),
    Book(1399, "Anna Karenina (tr. Constance Garnett)", "Leo Tolstoy", 1878, "train"),
    Book(28054, "The Brothers Karamazov (tr. Constance Garnett)", "Fyodor Dostoevsky", 1880, "train"),
    Book(2554, "Crime and Punishment (tr. Constance Garnett)", "Fyodor Dostoevsky", 1866, "train"),
    Book(1260, "Jane Eyre: An Autobiography", "Charlotte Brontë", 1847, "train"),
    Book(6593, "The History of Tom Jones, a Foundling", "Henry Fielding", 1749, "train"),
    Book(514, "Little Women", "Louisa May Alcott", 1868, "train"),
    Book(84, "Frankenstein; Or, The Modern Prometheus", "Mary Wollstonecraft Shelley", 1818, "train"),
    Book(1661, "The Adventures of Sherlock Holmes", "Arthur Conan Doyle", 1892, "train"),
    Book(120, "Treasure Island", "Robert Louis Stevenson", 1883, "train"),
    Book(76, "Adventures of Huckleberry Finn", "Mark Twain", 1884, "train"),
    Book(82, "Ivanhoe: A Romance", "Walter Scott", 1819, "train"),
    Book(2226, "Kim", "Rudyard Kipling", 1901, "train"),
    Book(1257, "The Three Musketeers", "Alexandre Dumas", 1844, "train"),
    Book(4276, "North and South", "Elizabeth Gaskell", 1855, "train"),
    Book(203, "Uncle Tom's Cabin", "Harriet Beecher Stowe", 1852, "train"),
    Book(940, "The Last of the Mohicans; A Narrative of 1757", "James Fenimore Cooper", 1826, "train"),
    Book(2413, "Madame Bovary (tr. Eleanor Marx-Aveling)", "Gustave Flaubert", 1857, "train"),
    Book(284, "The House of Mirth", "Edith Wharton", 1905, "train"),
    Book(233, "Sister Carrie", "Theodore Dreiser", 1900, "train"),
    Book(2084, "The Way of All Flesh", "Samuel Butler", 1903, "train"),
    Book(599, "Vanity Fair", "William Makepeace Thackeray", 1848, "valid"),
    Book(33, "The Scarlet Letter", "Nathaniel Hawthorne", 1850, "valid"),
    Book(768, "Wuthering Heights", "Emily Brontë", 1847, "valid"),
    Book(3409, "Barchester Towers", "Anthony Trollope", 1857, "valid"),
    Book(5658, "Lord Jim", "Joseph Conrad", 1900, "valid"),
)
# A second evaluation domain (as the paper's Appendix G adds arXiv beside PG-19): long non-fiction books (history,
# science, economics, essays) by authors not in BOOKS, never trained on. `minigriffin download --nonfiction`
# writes them to <out>/nonfiction/, which `--eval-data-dir` reads (every .txt file of the folder).
NONFICTION = (
    Book(731, "The History of the Decline and Fall of the Roman Empire, Volume 1", "Edward Gibbon", 1776,
         "nonfiction"),
    Book(1228, "On the Origin of Species (first edition)", "Charles Darwin", 1859, "nonfiction"),
    Book(3300, "An Inquiry into the Nature and Causes of the Wealth of Nations", "Adam Smith", 1776, "nonfiction"),
    Book(205, "Walden, and On The Duty Of Civil Disobedience", "Henry David Thoreau", 1854, "nonfiction"),
    Book(2944, "Essays - First Series", "Ralph Waldo Emerson", 1841, "nonfiction"),
    Book(34901, "On Liberty", "John Stuart Mill", 1859, "nonfiction"),
)
_BY_ID = {book.gutenberg_id: book for book in BOOKS + NONFICTION}

_START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$", re.IGNORECASE | re.MULTILINE)
# "End of the Project Gutenberg EBook of X" / "End of Project Gutenberg's X", when it is the body's last line
_END_OF_LINE = re.compile(r"\n[ \t]*End of (?:the )?Project Gutenberg\b[^\n]*\s*\Z", re.IGNORECASE)


def strip_gutenberg(text, name="book"):
    """The body of a Project Gutenberg text: between the `*** START OF` and `*** END OF` lines, with `\\n` ends.

    Also drops an "End of the Project Gutenberg EBook of ..." line just before the end marker, and blank
    lines at both ends. ValueError naming `name` if a marker is missing or nothing is left.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(text)
    if start is None:
        raise ValueError(f"{name}: no '*** START OF THE PROJECT GUTENBERG EBOOK' line; is this a Gutenberg text?")
    end = _END.search(text, start.end())
    if end is None:
        raise ValueError(f"{name}: no '*** END OF THE PROJECT GUTENBERG EBOOK' line after the START line; "
                         f"the download may be truncated")
    body = _END_OF_LINE.sub("\n", text[start.end():end.start()])
    body = re.sub(r"\A(?:[ \t]*\n)+", "", body).rstrip()
    if not body:
        raise ValueError(f"{name}: no text between the START and END lines")
    return body + "\n"


def _fetch(url, *, retries, timeout, sleep):
    """GET url; retry network errors, timeouts and HTTP 429/5xx with exponential backoff; RuntimeError at the end."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 429 and exc.code < 500:       # 404 and friends will not get better by retrying
                raise RuntimeError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
            error = exc
        except (OSError, http.client.HTTPException) as exc:   # URLError, refused, reset, timeout, truncated
            error = exc
        logger.warning("attempt %d/%d for %s failed: %s", attempt + 1, retries + 1, url, error)
        if attempt < retries:
            sleep(BACKOFF_S * 2**attempt)
    if isinstance(error, urllib.error.HTTPError):
        raise RuntimeError(f"{url} still answered HTTP {error.code} {error.reason} after {retries + 1} attempts; "
                           f"the server may be busy: try again later, or pass --data-dir PATH with a folder of "
                           f".txt books")
    reason = getattr(error, "reason", error)
    raise RuntimeError(f"could not download {url} after {retries + 1} attempts ({reason}). This machine seems to "
                       f"be offline, or cannot reach the server. Train on local text instead: pass --data-dir "
                       f"PATH with a folder of UTF-8 .txt books (see README.md).")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(path):
    """{gutenberg_id: row dict} of a MANIFEST.tsv; {} if it is missing or unreadable (files are then refetched)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return {int(row["gutenberg_id"]): row for row in rows}
    except (OSError, KeyError, ValueError, csv.Error):
        return {}


def _write_manifest(path, rows):
    """Write rows (in BOOKS order) atomically, one tab-separated line each."""
    order = {book.gutenberg_id: i for i, book in enumerate(BOOKS + NONFICTION)}
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for gid in sorted(rows, key=lambda g: order.get(g, len(order))):
        lines.append("\t".join(str(rows[gid][col]) for col in MANIFEST_COLUMNS))
    atomic_write(path, ["\n".join(lines).encode("utf-8") + b"\n"])


def download_books(out_dir=None, *, ids=None, nonfiction=False, base_url=GUTENBERG_URL, retries=3, timeout=30,
                   sleep=time.sleep):
    """Download BOOKS (or the given Gutenberg ids) into out_dir/train and out_dir/valid; return out_dir.
    nonfiction=True: the NONFICTION books instead, into out_dir/nonfiction (an evaluation-only domain).

    out_dir: default `default_cache_dir() / "books"`. retries: extra attempts per file after a failure (with
    exponential backoff through `sleep`); timeout: seconds per request. A file whose sha256 matches its
    MANIFEST.tsv row is skipped without any network access. RuntimeError if the server cannot be reached.
    """
    out_dir = default_cache_dir() / "books" if out_dir is None else Path(out_dir).expanduser()
    default = NONFICTION if nonfiction else BOOKS
    ids = [book.gutenberg_id for book in default] if ids is None else list(dict.fromkeys(int(i) for i in ids))
    unknown = [i for i in ids if i not in _BY_ID]
    if unknown:
        raise ValueError(f"unknown Gutenberg ids {unknown}; known ids: {sorted(_BY_ID)}")
    base_url = base_url.rstrip("/")
    manifests = {split: _read_manifest(out_dir / split / "MANIFEST.tsv") for split in ("train", "valid", "nonfiction")}
    for gid in ids:
        book = _BY_ID[gid]
        path, rows = out_dir / book.split / f"{gid}.txt", manifests[book.split]
        if path.is_file() and gid in rows and rows[gid]["sha256"] == _sha256(path):
            logger.info("%s (%d): already there, checksum matches", book.title, gid)
            continue
        url = URL_PATTERN.format(base_url=base_url, id=gid)
        logger.info("downloading %s (%d) from %s", book.title, gid, url)
        raw = _fetch(url, retries=retries, timeout=timeout, sleep=sleep)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"Gutenberg book {gid} ({book.title}) from {url} is not valid UTF-8 at byte offset "
                             f"{exc.start}") from None
        body = strip_gutenberg(text, name=f"Gutenberg book {gid} ({book.title}) from {url}").encode("utf-8")
        atomic_write(path, [body])
        rows[gid] = {"gutenberg_id": gid, "title": book.title, "author": book.author,
                     "first_published_year": book.year, "chars": len(body.decode("utf-8")), "bytes": len(body),
                     "sha256": hashlib.sha256(body).hexdigest(), "source_url": url}
        # Rewrite the manifest after every book, so an interrupted run keeps what it has fetched.
        _write_manifest(out_dir / book.split / "MANIFEST.tsv",
                        {g: r for g, r in rows.items() if (out_dir / book.split / f"{g}.txt").is_file()})
    return out_dir


def resolve_data_dir(data_dir=None):
    """The books folder a command uses: data_dir (--data-dir) if given, else $MINIGRIFFIN_BOOKS, else the books
    downloaded from Project Gutenberg (downloading them into the cache the first time)."""
    if data_dir:
        return data_dir
    if os.environ.get("MINIGRIFFIN_BOOKS"):
        return os.environ["MINIGRIFFIN_BOOKS"]
    print("no --data-dir given: using books from Project Gutenberg (downloaded once into the cache)")
    return str(download_books())
