//! Tests of the librbd/librados wrapper against a real cluster. They run only when `BASALT_CEPH_CONF` names a
//! cluster's ceph.conf (start one with `scripts/ceph/micro-ceph.sh start DIR`); otherwise each test returns at once
//! and says it was skipped. Built only with the `ceph` feature.
//!
//! Every test works on its own uniquely named images, namespaces and pools, so they run in parallel on one cluster.

mod images;
mod io;
mod namespaces;
mod pools;
mod quirks;
mod snapshots;
mod support;
mod trash;
