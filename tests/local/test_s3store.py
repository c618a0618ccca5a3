"""The file-backed S3 store: mapping, prefix listing, digests, downloads and atomic writes."""

from __future__ import annotations

import os

import pytest

from mlops.local.s3store import S3Store, S3StoreError


def test_put_and_read_back(store: S3Store, tmp_path):
    src = tmp_path / "f.csv"
    src.write_text("a,b\n1,2\n")
    store.put_file("s3://bucket/data/f.csv", src)
    store.put_bytes("s3://bucket/data/g.bin", b"\x00\x01")
    assert store.path("s3://bucket/data/f.csv").read_text() == "a,b\n1,2\n"
    assert store.path("s3://bucket/data/f.csv") == tmp_path / "s3" / "bucket" / "data" / "f.csv"
    assert store.exists("s3://bucket/data/g.bin")
    assert not store.exists("s3://bucket/data")  # a "directory" is not an object
    assert not any((tmp_path / "s3" / ".tmp").iterdir())  # no temp file left behind


def test_list_uses_string_prefix_semantics(store: S3Store):
    for key in ["raw/a.csv", "raw/sub/b.csv", "raw2/c.csv", "other/d.csv"]:
        store.put_bytes(f"s3://b/{key}", key.encode())
    assert store.list("s3://b/raw/") == ["s3://b/raw/a.csv", "s3://b/raw/sub/b.csv"]
    assert store.list("s3://b/raw") == ["s3://b/raw/a.csv", "s3://b/raw/sub/b.csv", "s3://b/raw2/c.csv"]
    assert store.list("s3://b/raw/a") == ["s3://b/raw/a.csv"]
    assert store.list("s3://b/raw/a.csv") == ["s3://b/raw/a.csv"]
    assert store.list("s3://b/nothing") == []
    assert store.list("s3://empty-bucket/x") == []


def test_put_tree_and_download_keep_relative_keys(store: S3Store, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "x.txt").write_text("x")
    (src / "sub" / "y.txt").write_text("y")
    store.put_tree("s3://b/out/run1/", src)
    assert store.list("s3://b/out/run1") == ["s3://b/out/run1/sub/y.txt", "s3://b/out/run1/x.txt"]
    files = store.download("s3://b/out/run1", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in files) == ["sub/y.txt", "x.txt"]
    assert (tmp_path / "dl" / "sub" / "y.txt").read_text() == "y"
    # A single object downloads under its own name, as an S3Prefix input pointing at one file does.
    assert store.download("s3://b/out/run1/x.txt", tmp_path / "one") == [tmp_path / "one" / "x.txt"]


def test_digest_depends_on_keys_and_content_only(store: S3Store, tmp_path):
    store.put_bytes("s3://b/p/a", b"1")
    store.put_bytes("s3://b/p/b", b"2")
    other = S3Store(tmp_path / "other")
    other.put_bytes("s3://c/q/a", b"1")
    other.put_bytes("s3://c/q/b", b"2")
    assert store.digest("s3://b/p/") == other.digest("s3://c/q/")
    before = store.digest("s3://b/p/")
    store.put_bytes("s3://b/p/b", b"3")
    assert store.digest("s3://b/p/") != before
    store.put_bytes("s3://b/p/b", b"2")
    store.put_bytes("s3://b/p/c", b"")
    assert store.digest("s3://b/p/") != before


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("/local/path", "not an S3 URI"),
        ("https://bucket/key", "not an S3 URI"),
        ("s3://", "no valid bucket"),
        ("s3:///key", "no valid bucket"),
        ("s3://b/../escape", "'..'"),
        ("s3://b/a/./b", "'.'"),
        ("s3://b//etc/passwd", "leading '/'"),
        ("s3://b/a//b", "empty path segment"),
        ("s3://b/a/b//", "empty path segment"),
        (None, "not an S3 URI"),
    ],
)
def test_bad_uris_are_refused_with_one_line(store: S3Store, uri, fragment):
    with pytest.raises(S3StoreError) as err:
        store.path(uri)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_object_and_prefix_of_the_same_name_conflict_cleanly(store: S3Store):
    store.put_bytes("s3://b/a", b"file")
    with pytest.raises(S3StoreError, match="parent key is an object"):
        store.put_bytes("s3://b/a/child", b"x")
    store.put_bytes("s3://b/d/child", b"x")
    with pytest.raises(S3StoreError, match="holds objects under that key"):
        store.put_bytes("s3://b/d", b"x")
    assert store.list("s3://b/") == ["s3://b/a", "s3://b/d/child"]
    assert store.path("s3://b/a").read_bytes() == b"file"


def test_failed_upload_writes_nothing(store: S3Store, tmp_path):
    with pytest.raises(S3StoreError, match="not a file"):
        store.put_file("s3://b/k", tmp_path / "missing")
    assert store.list("s3://b/") == []


def test_put_tree_skips_symlinks_and_special_files_without_following_them(store: S3Store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "y.txt").write_text("y")
    (src / "link").symlink_to(outside / "secret")
    (src / "dirlink").symlink_to(outside)
    os.mkfifo(src / "fifo")
    skipped = []
    assert store.put_tree("s3://b/t/", src, on_skip=lambda rel, why: skipped.append((rel, why))) == [
        "dirlink", "fifo", "link"
    ]  # fmt: skip
    assert store.list("s3://b/t/") == ["s3://b/t/sub/y.txt"]
    assert dict(skipped) == {
        "dirlink": "a symlink, not followed", "link": "a symlink, not followed", "fifo": "not a regular file"
    }  # fmt: skip
    (tmp_path / "tree-link").symlink_to(src)
    with pytest.raises(S3StoreError, match="not a directory"):
        store.put_tree("s3://b/u/", tmp_path / "tree-link")


@pytest.mark.parametrize("rel", ["/abs/x", "../x", "a/../../x", "a//b", ""])
def test_download_refuses_a_relative_path_that_leaves_the_destination(store: S3Store, tmp_path, rel):
    store.put_bytes("s3://b/k", b"x")
    with pytest.raises(S3StoreError, match="cannot download s3://b/k"):
        store.download_objects([("s3://b/k", rel)], tmp_path / "dest")
    assert not (tmp_path / "x").exists()
