//! The engine's integration tests: the model-based property test, crash and fault injection, and the refusals.

mod crash;
mod deferred;
mod direct_io;
mod full_disk;
mod integrity;
mod journal;
mod large;
mod long_chains;
mod merge;
mod model;
mod purge_schedule;
mod refusals;
mod striping;
mod upgrade;
