//! End-to-end tests live in `tests/`: they start the real `stratus-apiserver` and `stratus`
//! binaries (built by `hack/test.sh` before the tests run) and a real etcd.
