//! Test-only package: the end-to-end tests are in `tests/e2e/` and run the real binaries of the workspace.
