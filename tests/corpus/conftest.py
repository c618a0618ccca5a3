"""The corpus holds third-party code as test data: only test_corpus.py is collected."""

collect_ignore_glob = ["*/source/*", "*/s3/*"]
