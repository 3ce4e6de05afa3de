//! The `basalt` command line: rbd's command set over the REST API, plus `serve`, `fsck` and `upgrade`.
//!
//! Argument parsing is clap's; each command resolves its specs with basalt-core's parser, makes the API calls of
//! docs/API.md through [`api::Api`], and prints rbd's layout or, with `--format json`, the API's objects.

mod admin;
mod api;
mod auth;
mod device;
mod error;
mod fsck;
mod http;
mod image;
mod nbd;
mod output;
mod perf;
mod serve;
mod snap;
mod spec;
mod tls;
mod transfer;
mod trash;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

pub use error::Failure;
use output::Format;
use spec::{DestArgs, ImageArgs, PoolNsArgs, SnapArgs};

/// basalt: block images with Ceph RBD workflows. Commands follow the rbd CLI and talk to 'basalt serve' over
/// DATA_DIR/api.sock, or over HTTP with --server.
#[derive(Parser, Debug)]
#[command(name = "basalt", version, about, max_term_width = 110)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Args, Debug, Clone)]
struct Global {
    /// Data directory: the store of 'serve' and 'fsck', and where the CLI finds api.sock
    #[arg(long, global = true, env = "BASALT_DATA_DIR", value_name = "DIR", default_value = "basalt-data")]
    data_dir: PathBuf,
    /// Talk to the server at this URL (http[s]://host:port) with a token from BASALT_TOKEN or 'basalt login'
    #[arg(long, global = true, env = "BASALT_URL", value_name = "URL")]
    server: Option<String>,
    /// Trust the CA certificates of this PEM file for an https:// --server (instead of the system's CAs)
    #[arg(long, global = true, env = "BASALT_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Do not draw progress lines for long operations
    #[arg(long, global = true)]
    no_progress: bool,
}

/// Image features: --image-feature may be repeated or comma-separated.
#[derive(Args, Debug, Clone, Default)]
struct LayoutArgs {
    /// Object size (4K to 32M, a power of two); a bare number is bytes
    #[arg(long, value_name = "SIZE")]
    object_size: Option<String>,
    /// Image feature (layering, exclusive-lock, object-map, fast-diff, deep-flatten, journaling); repeatable
    #[arg(long = "image-feature", value_name = "FEATURE")]
    image_features: Vec<String>,
    /// Stripe unit; a bare number is bytes (needs --stripe-count)
    #[arg(long, value_name = "SIZE")]
    stripe_unit: Option<String>,
    /// Stripe count (needs --stripe-unit)
    #[arg(long, value_name = "COUNT")]
    stripe_count: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum PerfCommand {
    /// Per-image figures
    Image {
        #[command(subcommand)]
        command: PerfImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PerfImageCommand {
    /// A live table of the busiest images: writes and reads per second, throughput and latency
    Iostat(perf::IostatArgs),
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: REST API on --listen and DATA_DIR/api.sock, NBD on --nbd-listen
    Serve(ServeArgs),
    /// Check a stopped store; exits 1 if anything is inconsistent
    Fsck,
    /// Upgrade a stopped store to this basalt's format version (offline; running it again changes nothing)
    Upgrade,
    /// Print the version
    Version,
    /// Create an image
    #[command(visible_alias = "add")]
    Create(CreateArgs),
    /// List images of a pool[/namespace]
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show an image or snapshot
    Info(InfoArgs),
    /// Change an image's size
    Resize(ResizeArgs),
    /// Rename an image (within its pool and namespace)
    #[command(visible_alias = "mv")]
    Rename(RenameArgs),
    /// Remove an image (refused while it has snapshots, clones or users)
    #[command(visible_alias = "remove")]
    Rm(ImageOnly),
    /// Copy an image (or one snapshot) into a new standalone image
    #[command(visible_alias = "copy")]
    Cp(CopyArgs),
    /// Deep copy: the image with all its snapshots
    Deep {
        #[command(subcommand)]
        command: DeepCommand,
    },
    /// Copy the parent's data into a clone and detach it from its parent
    Flatten(ImageOnly),
    /// Show provisioned and used space of an image (and its snapshots) or of every image of a pool
    #[command(visible_alias = "disk-usage")]
    Du(DuArgs),
    /// Check every data block of an image (head and snapshots), or of every image of the store, against its checksum;
    /// exits 1 when a block is damaged
    Scrub(ScrubArgs),
    /// List the extents that changed since a snapshot (or since creation)
    Diff(DiffArgs),
    /// Write an image (or a snapshot) to a raw file, sparse, or to stdout: export SPEC[@SNAP] FILE|-
    Export(ExportArgs),
    /// Create a thin image from a raw file or stdin: import FILE|- [DEST_SPEC]
    Import(ImportArgs),
    /// Write the changes between two snapshots as an rbd diff stream: export-diff [--from-snap S] SPEC[@SNAP] FILE|-
    ExportDiff(ExportDiffArgs),
    /// Apply an rbd diff stream to an image, then create its end snapshot: import-diff FILE|- SPEC
    ImportDiff(ImportDiffArgs),
    /// Snapshot commands
    Snap {
        #[command(subcommand)]
        command: SnapCommand,
    },
    /// Clone a protected snapshot into a new image: clone parent@snap child
    Clone(CloneArgs),
    /// List the clones of a snapshot
    Children(ChildrenArgs),
    /// Trash commands
    Trash {
        #[command(subcommand)]
        command: TrashCommand,
    },
    /// Attach images: how to connect (device connection)
    Device {
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
    /// NBD client certificates
    Nbd {
        #[command(subcommand)]
        command: nbd::NbdCommand,
    },
    /// Namespace commands
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Configuration overrides (global, pool, image)
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Enable or disable image features
    Feature {
        #[command(subcommand)]
        command: FeatureCommand,
    },
    /// Pool commands
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// What needs attention: full pools or disk, degraded images, failed tasks, a stopped store, expiring certificates
    Alerts(AlertsArgs),
    /// Performance figures: perf image iostat
    Perf {
        #[command(subcommand)]
        command: PerfCommand,
    },
    /// Log in to a server and keep the token for later commands with --server
    Login(LoginArgs),
    /// Forget the saved token (and end the session on the server)
    Logout,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// HTTP address of the REST API and dashboard
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// NBD address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10809")]
    nbd_listen: String,
    /// Require TLS on the NBD address with this certificate chain (PEM); DATA_DIR/nbd.sock stays in clear
    #[arg(long, value_name = "PEM", env = "BASALT_NBD_TLS_CERT", requires = "nbd_tls_key")]
    nbd_tls_cert: Option<PathBuf>,
    /// The private key of --nbd-tls-cert (PEM)
    #[arg(long, value_name = "PEM", env = "BASALT_NBD_TLS_KEY", requires = "nbd_tls_cert")]
    nbd_tls_key: Option<PathBuf>,
    /// Also require NBD clients to present a certificate signed by this CA (PEM)
    #[arg(long, value_name = "PEM", env = "BASALT_NBD_TLS_CLIENT_CA", requires = "nbd_tls_cert")]
    nbd_tls_client_ca: Option<PathBuf>,
    /// Serve this Ceph cluster (its ceph.conf) through librbd instead of the embedded engine
    #[arg(long, value_name = "CONF", env = "BASALT_CEPH_CONF")]
    ceph_conf: Option<PathBuf>,
    /// The Ceph client id (client.ID) to connect as
    #[arg(long, value_name = "ID", env = "BASALT_CEPH_ID", default_value = "admin", requires = "ceph_conf")]
    ceph_id: String,
    /// The pool keeping basalt's users, roles, sessions and task records in the cluster (created if missing)
    #[arg(long, value_name = "POOL", default_value = ".basalt", requires = "ceph_conf")]
    ceph_meta_pool: String,
    /// Memory for the embedded store's metadata (block bitmaps and the metadata store's pages), e.g. 256M or 2G;
    /// more is read from disk when needed (not used with --ceph-conf)
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = cache_size)]
    cache_size: usize,
    /// Image data bypasses the page cache (O_DIRECT): for hosts whose guests cache, so data is not cached twice;
    /// the data directory's file system must support it (not used with --ceph-conf)
    #[arg(long, conflicts_with = "ceph_conf")]
    direct_io: bool,
    #[command(flatten)]
    api: serve::ApiArgs,
    #[command(flatten)]
    nbd: serve::NbdArgs,
}

#[derive(Args, Debug)]
struct ImageOnly {
    #[command(flatten)]
    image: ImageArgs,
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Size (10G, 512M, ...; a bare number is MiB)
    #[arg(short = 's', long, value_name = "SIZE")]
    size: String,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Pool for the data objects
    #[arg(long, value_name = "POOL")]
    data_pool: Option<String>,
    /// Image format; only 2 exists here
    #[arg(long, value_name = "FORMAT")]
    image_format: Option<u32>,
}

#[derive(Args, Debug)]
struct AlertsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct LsArgs {
    #[command(flatten)]
    location: PoolNsArgs,
    /// Long listing: size, parent, format, protection, lock, and snapshots
    #[arg(short = 'l', long)]
    long: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct InfoArgs {
    #[command(flatten)]
    spec: SnapArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct ResizeArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// New size (10G, 512M, ...; a bare number is MiB)
    #[arg(short = 's', long, value_name = "SIZE")]
    size: String,
    /// Allow making the image smaller (data past the new size is lost)
    #[arg(long)]
    allow_shrink: bool,
}

#[derive(Args, Debug)]
struct RenameArgs {
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    dest: DestArgs,
}

#[derive(Args, Debug)]
struct CopyArgs {
    #[command(flatten)]
    source: SnapArgs,
    #[command(flatten)]
    dest: DestArgs,
    #[command(flatten)]
    layout: LayoutArgs,
}

#[derive(Subcommand, Debug)]
enum DeepCommand {
    /// Copy an image with all its snapshots (clones keep their parent)
    #[command(visible_alias = "copy")]
    Cp(DeepCopyArgs),
}

#[derive(Args, Debug)]
struct DeepCopyArgs {
    #[command(flatten)]
    source: ImageArgs,
    #[command(flatten)]
    dest: DestArgs,
}

#[derive(Args, Debug)]
struct DuArgs {
    /// The image or snapshot; every image of the pool when neither a spec nor --image is given
    #[command(flatten)]
    spec: SnapArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct ScrubArgs {
    /// The image; every image of the store when neither a spec nor --image is given
    #[command(flatten)]
    image: ImageArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct DiffArgs {
    #[command(flatten)]
    spec: SnapArgs,
    /// Only changes made after this snapshot
    #[arg(long, value_name = "SNAP")]
    from_snap: Option<String>,
    /// Report whole objects instead of exact extents
    #[arg(long)]
    whole_object: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The source of `export` and `export-diff`: `SPEC FILE`, or just `FILE` with `--image`, or just `SPEC` with
/// `--path`, as rbd takes them.
#[derive(Args, Debug, Clone, Default)]
struct ExportSource {
    /// The image or snapshot: [pool/[namespace/]]image[@snap]
    #[arg(value_name = "SPEC")]
    first: Option<String>,
    /// The file to write, or '-' for stdout
    #[arg(value_name = "FILE")]
    second: Option<String>,
    /// Pool of the image
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace of the image
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image name
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Snapshot name
    #[arg(long, value_name = "SNAP")]
    snap: Option<String>,
    /// The file to write, or '-' for stdout (instead of the positional one)
    #[arg(long, value_name = "FILE")]
    path: Option<String>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    source: ExportSource,
}

#[derive(Args, Debug)]
struct ExportDiffArgs {
    #[command(flatten)]
    source: ExportSource,
    /// The snapshot the changes start from (from an empty image when absent)
    #[arg(long, value_name = "SNAP")]
    from_snap: Option<String>,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The file to read, or '-' for stdin
    #[arg(value_name = "FILE")]
    first: Option<String>,
    /// The new image: [pool/[namespace/]]image (default: the file's name, in pool rbd)
    #[arg(value_name = "DEST_SPEC")]
    second: Option<String>,
    /// The file to read, or '-' for stdin (instead of the positional one)
    #[arg(long, value_name = "FILE")]
    path: Option<String>,
    /// Destination image name (or full spec)
    #[arg(long = "dest", value_name = "DEST")]
    dest: Option<String>,
    /// Destination pool
    #[arg(long, value_name = "POOL")]
    dest_pool: Option<String>,
    /// Destination namespace
    #[arg(long, value_name = "NAMESPACE")]
    dest_namespace: Option<String>,
    /// Destination pool (rbd's older spelling of --dest-pool)
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Pool for the data objects
    #[arg(long, value_name = "POOL")]
    data_pool: Option<String>,
    /// Smallest run of zeros left out of the image, so it stays thin (a power of two, 4K to 4M; default 4K)
    #[arg(long, value_name = "SIZE")]
    sparse_size: Option<String>,
    /// Expected size of the data on stdin, for the progress line and a first guess at the image size
    #[arg(long, value_name = "SIZE")]
    estimated_size: Option<String>,
}

#[derive(Args, Debug)]
struct ImportDiffArgs {
    /// The diff stream to read, or '-' for stdin
    #[arg(value_name = "FILE")]
    first: Option<String>,
    /// The image to apply it to: [pool/[namespace/]]image
    #[arg(value_name = "IMAGE_SPEC")]
    second: Option<String>,
    /// The diff stream to read, or '-' for stdin (instead of the positional one)
    #[arg(long, value_name = "FILE")]
    path: Option<String>,
    /// Pool of the image
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace of the image
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image name
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapCommand {
    /// Create a snapshot: snap create image@snap
    #[command(visible_alias = "add")]
    Create(SnapOnly),
    /// List an image's snapshots
    #[command(visible_alias = "list")]
    Ls(SnapLsArgs),
    /// Rename a snapshot: snap rename image@old new
    Rename(SnapRenameArgs),
    /// Protect a snapshot so it can be cloned and not removed
    Protect(SnapOnly),
    /// Unprotect a snapshot (refused while clones exist)
    Unprotect(SnapOnly),
    /// Roll the image back to a snapshot
    #[command(visible_alias = "revert")]
    Rollback(SnapOnly),
    /// Remove a snapshot (refused while protected)
    #[command(visible_alias = "remove")]
    Rm(SnapOnly),
    /// Remove every unprotected snapshot of an image
    Purge(ImageOnly),
    /// Limit the number of snapshots of an image
    Limit {
        #[command(subcommand)]
        command: SnapLimitCommand,
    },
}

#[derive(Args, Debug)]
struct SnapOnly {
    #[command(flatten)]
    spec: SnapArgs,
}

#[derive(Args, Debug)]
struct SnapLsArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct SnapRenameArgs {
    #[command(flatten)]
    spec: SnapArgs,
    /// The new name: a snapshot name, or image@snap of the same image
    #[arg(value_name = "DEST_SNAP")]
    dest: Option<String>,
    /// The new name (instead of the positional one)
    #[arg(long = "dest-snap", value_name = "SNAP")]
    dest_snap: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapLimitCommand {
    /// Set the limit
    Set(SnapLimitSetArgs),
    /// Remove the limit
    Clear(ImageOnly),
}

#[derive(Args, Debug)]
struct SnapLimitSetArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Maximum number of snapshots
    #[arg(long, value_name = "N")]
    limit: u64,
}

#[derive(Args, Debug)]
struct CloneArgs {
    #[command(flatten)]
    parent: SnapArgs,
    #[command(flatten)]
    dest: DestArgs,
    #[command(flatten)]
    layout: LayoutArgs,
}

#[derive(Args, Debug)]
struct ChildrenArgs {
    #[command(flatten)]
    spec: SnapArgs,
    /// Also list clones that are in the trash
    #[arg(short = 'a', long)]
    all: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Subcommand, Debug)]
enum TrashCommand {
    /// Move an image to the trash
    #[command(visible_alias = "move")]
    Mv(TrashMvArgs),
    /// List the trash of a pool[/namespace]
    #[command(visible_alias = "list")]
    Ls(TrashLsArgs),
    /// Restore an image from the trash: trash restore [pool[/ns]/]ID
    Restore(TrashRestoreArgs),
    /// Remove an image from the trash: trash rm [pool[/ns]/]ID
    #[command(visible_alias = "remove")]
    Rm(TrashRmArgs),
    /// Remove the expired entries of a pool's trash; `purge schedule ...` manages purge schedules
    Purge(TrashPurgeArgs),
}

#[derive(Args, Debug)]
struct TrashMvArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Keep the image until this time: 'YYYY-MM-DD[ HH:MM:SS]' (UTC), RFC 3339, or 'now + 2 hours'
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
}

/// A trash entry by id: `[pool[/ns]/]ID` or `--image-id`.
#[derive(Args, Debug, Clone)]
struct TrashIdArgs {
    /// The entry: [pool/[namespace/]]IMAGE_ID
    #[arg(value_name = "IMAGE_ID_SPEC")]
    spec: Option<String>,
    /// Pool
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image id
    #[arg(long, value_name = "ID")]
    image_id: Option<String>,
}

#[derive(Args, Debug)]
struct TrashLsArgs {
    #[command(flatten)]
    location: PoolNsArgs,
    /// Long listing: source, deletion time, expiration
    #[arg(short = 'l', long)]
    long: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct TrashRestoreArgs {
    #[command(flatten)]
    id: TrashIdArgs,
    /// Restore under this name instead of the original one
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
}

#[derive(Args, Debug)]
struct TrashRmArgs {
    #[command(flatten)]
    id: TrashIdArgs,
    /// Remove even before the expiration time
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct TrashPurgeArgs {
    /// Pool (default rbd)
    #[arg(value_name = "POOL")]
    pool_spec: Option<String>,
    /// Pool
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    #[command(subcommand)]
    schedule: Option<trash::PurgeSubcommand>,
}

#[derive(Subcommand, Debug)]
enum NamespaceCommand {
    /// Create a namespace: namespace create pool/ns
    Create(PoolNsOnly),
    /// List the namespaces of a pool
    #[command(visible_alias = "list")]
    Ls(NamespaceLsArgs),
    /// Remove an empty namespace: namespace rm pool/ns
    #[command(visible_alias = "remove")]
    Rm(PoolNsOnly),
}

#[derive(Args, Debug)]
struct PoolNsOnly {
    #[command(flatten)]
    location: PoolNsArgs,
}

#[derive(Args, Debug)]
struct NamespaceLsArgs {
    #[command(flatten)]
    location: PoolNsArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Global overrides: config global get|set|rm|list [global] ...
    Global {
        #[command(subcommand)]
        command: ConfigAction,
    },
    /// Pool overrides: config pool get|set|rm|list POOL ...
    Pool {
        #[command(subcommand)]
        command: ConfigAction,
    },
    /// Image overrides: config image get|set|rm|list IMAGE_SPEC ...
    Image {
        #[command(subcommand)]
        command: ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print an override set at this level
    Get(ConfigArgs),
    /// Set an override: ... KEY VALUE
    Set(ConfigArgs),
    /// Remove an override
    #[command(visible_alias = "remove")]
    Rm(ConfigArgs),
    /// List every option with its value and source
    #[command(visible_alias = "ls")]
    List(ConfigListArgs),
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// [ENTITY] KEY [VALUE]: the entity is the pool or image spec ('global' or nothing for global)
    #[arg(value_name = "ARGS", num_args = 1..=3, required = true)]
    args: Vec<String>,
    /// Pool (for 'config pool' and 'config image')
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace (for 'config image')
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image (for 'config image')
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

#[derive(Args, Debug)]
struct ConfigListArgs {
    /// The entity: POOL or IMAGE_SPEC ('global' or nothing for global)
    #[arg(value_name = "ENTITY")]
    entity: Option<String>,
    /// Pool (for 'config pool' and 'config image')
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace (for 'config image')
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image (for 'config image')
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Subcommand, Debug)]
enum FeatureCommand {
    /// Enable features: feature enable IMAGE_SPEC FEATURE...
    Enable(FeatureArgs),
    /// Disable features: feature disable IMAGE_SPEC FEATURE...
    Disable(FeatureArgs),
}

#[derive(Args, Debug)]
struct FeatureArgs {
    /// IMAGE_SPEC FEATURE... (just FEATURE... with --image); features: exclusive-lock, object-map, fast-diff,
    /// journaling; deep-flatten can only be disabled
    #[arg(value_name = "ARGS", required = true)]
    args: Vec<String>,
    /// Pool of the image
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace of the image
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Image name
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// Create a pool
    Create(PoolCreateArgs),
    /// List pools
    #[command(visible_alias = "list")]
    Ls(PoolLsArgs),
    /// Remove an empty pool
    #[command(visible_alias = "remove")]
    Rm(PoolNameArgs),
    /// Application tags of a pool (image commands need 'rbd')
    Application {
        #[command(subcommand)]
        command: PoolApplicationCommand,
    },
    /// Set a quota, as ceph osd pool set-quota: pool set-quota POOL max_bytes|max_objects N (0 removes it)
    SetQuota(PoolQuotaArgs),
    /// Show a pool's quotas: pool get-quota POOL
    GetQuota(PoolNameArgs),
}

#[derive(Args, Debug)]
struct PoolQuotaArgs {
    /// Pool name
    #[arg(value_name = "POOL")]
    pool: String,
    /// Which quota
    #[arg(value_name = "FIELD", value_parser = ["max_bytes", "max_objects"])]
    field: String,
    /// Bytes (with an optional unit: 10G) or objects; 0 removes the quota
    #[arg(value_name = "N")]
    value: String,
}

#[derive(Args, Debug)]
struct PoolCreateArgs {
    /// Pool name
    #[arg(value_name = "POOL")]
    pool: String,
    /// Tag the pool with this application (e.g. rbd); repeatable
    #[arg(long = "application", value_name = "APP")]
    applications: Vec<String>,
}

#[derive(Args, Debug)]
struct PoolLsArgs {
    /// Long listing: id, applications, health, usage
    #[arg(short = 'l', long)]
    long: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
struct PoolNameArgs {
    /// Pool name
    #[arg(value_name = "POOL")]
    pool: String,
}

#[derive(Subcommand, Debug)]
enum PoolApplicationCommand {
    /// Tag a pool: pool application enable POOL APP
    Enable(PoolApplicationArgs),
    /// Remove a tag: pool application disable POOL APP
    Disable(PoolApplicationArgs),
}

#[derive(Args, Debug)]
struct PoolApplicationArgs {
    /// Pool name
    #[arg(value_name = "POOL")]
    pool: String,
    /// Application (rbd)
    #[arg(value_name = "APP")]
    app: String,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// User name
    #[arg(short = 'u', long, value_name = "USER", default_value = "admin")]
    user: String,
    /// Password (prompted for on stdin when not given)
    #[arg(long, env = "BASALT_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    password: Option<String>,
    /// Print the token instead of saving it
    #[arg(long)]
    print: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Serve(args) => {
            let nbd_tls = match (args.nbd_tls_cert, args.nbd_tls_key) {
                (Some(cert), Some(key)) => Some(basalt_nbd::TlsFiles { cert, key, client_ca: args.nbd_tls_client_ca }),
                _ => None,
            };
            let ceph = args.ceph_conf.map(|conf| basalt_server::CephConfig {
                conf,
                client_id: args.ceph_id,
                meta_pool: args.ceph_meta_pool,
            });
            let backing = serve::Backing { ceph, cache_bytes: args.cache_size, direct_io: args.direct_io };
            serve::run(&global.data_dir, &args.listen, &args.nbd_listen, nbd_tls, backing, args.api, args.nbd)
        }
        Command::Fsck => fsck::run(&global.data_dir),
        Command::Upgrade => fsck::upgrade(&global.data_dir),
        Command::Version => {
            println!("basalt {} (store format {})", env!("CARGO_PKG_VERSION"), basalt_engine::FORMAT_VERSION);
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => auth::login(&global, &args),
        Command::Logout => auth::logout(&global),
        Command::Device { command } => {
            device::run(&global, &command)?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let api = auth::connect(&global)?;
            dispatch(&api, command)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn dispatch(api: &api::Api, command: Command) -> Result<()> {
    match command {
        Command::Create(a) => image::create(api, &a),
        Command::Ls(a) => image::ls(api, &a),
        Command::Info(a) => image::info(api, &a),
        Command::Resize(a) => image::resize(api, &a),
        Command::Rename(a) => image::rename(api, &a),
        Command::Rm(a) => image::rm(api, &a.image),
        Command::Cp(a) => image::copy(api, &a),
        Command::Deep { command: DeepCommand::Cp(a) } => image::deep_copy(api, &a),
        Command::Flatten(a) => image::flatten(api, &a.image),
        Command::Du(a) => image::du(api, &a),
        Command::Scrub(a) => image::scrub(api, &a.image, a.format),
        Command::Diff(a) => image::diff(api, &a),
        Command::Export(a) => transfer::export(api, &a),
        Command::Import(a) => transfer::import(api, &a),
        Command::ExportDiff(a) => transfer::export_diff(api, &a),
        Command::ImportDiff(a) => transfer::import_diff(api, &a),
        Command::Feature { command } => image::feature(api, &command),
        Command::Snap { command } => snap::run(api, &command),
        Command::Clone(a) => snap::clone(api, &a),
        Command::Children(a) => snap::children(api, &a),
        Command::Trash { command } => trash::run(api, &command),
        Command::Namespace { command } => admin::namespace(api, &command),
        Command::Nbd { command } => nbd::run(api, &command),
        Command::Config { command } => admin::config(api, &command),
        Command::Pool { command } => admin::pool(api, &command),
        Command::Alerts(a) => alerts(api, &a),
        Command::Perf { command: PerfCommand::Image { command: PerfImageCommand::Iostat(a) } } => perf::iostat(api, &a),
        Command::Serve(_)
        | Command::Fsck
        | Command::Upgrade
        | Command::Version
        | Command::Login(_)
        | Command::Logout
        | Command::Device { .. } => Ok(()),
    }
}

/// `alerts [--format json]`: one line per alert, critical first; exits 0 (alerts are facts, not failures).
fn alerts(api: &api::Api, a: &AlertsArgs) -> anyhow::Result<()> {
    let value = api.get_value("/api/alerts")?;
    if a.format == Format::Json {
        return output::print_json(&value);
    }
    let items = value.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return output::print_text("no alerts\n");
    }
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let mut table = output::Table::new(&[
        ("SEVERITY", output::Align::Left),
        ("SINCE", output::Align::Left),
        ("SUMMARY", output::Align::Left),
        ("DETAIL", output::Align::Left),
    ]);
    for item in &items {
        let since = item.get("since").and_then(serde_json::Value::as_u64).unwrap_or(0);
        table.row(vec![
            text(item, "severity"),
            output::ctime(i64::try_from(since).unwrap_or(0)),
            text(item, "summary"),
            text(item, "detail"),
        ]);
    }
    table.print()
}

/// Parses `--cache-size`: a size with a unit (a bare number is MiB), at least 16 MiB.
fn cache_size(text: &str) -> Result<usize, String> {
    let bytes = basalt_core::units::parse_size(text, 1 << 20).map_err(|e| e.message().to_owned())?;
    if bytes < 16 << 20 {
        return Err(format!("{text} is too small: the metadata cache needs at least 16M"));
    }
    usize::try_from(bytes).map_err(|_| format!("{text} is too large"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cache_size_takes_units_and_refuses_too_little() {
        let parsed = |args: &[&str]| match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Serve(serve)) => Ok(serve.cache_size),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(err) => Err(err.to_string()),
        };
        assert_eq!(parsed(&["basalt", "serve"]), Ok(256 << 20));
        assert_eq!(parsed(&["basalt", "serve", "--cache-size", "2G"]), Ok(2 << 30));
        assert_eq!(parsed(&["basalt", "serve", "--cache-size", "64"]), Ok(64 << 20));
        let small = parsed(&["basalt", "serve", "--cache-size", "8M"]).expect_err("8M is refused");
        assert!(small.contains("at least 16M"), "{small}");
        assert!(parsed(&["basalt", "serve", "--cache-size", "lots"]).is_err());
    }

    #[test]
    fn rbd_argument_forms_parse() {
        for args in [
            &["basalt", "create", "--size", "10G", "--object-size", "4M", "--image-feature", "layering", "p/ns/i"][..],
            &["basalt", "cp", "src@s", "dest"],
            &["basalt", "cp", "-p", "rbd", "--image", "a", "--snap", "s", "--dest", "b", "--dest-pool", "q"],
            &["basalt", "deep", "copy", "a", "b"],
            &["basalt", "rename", "a", "b"],
            &["basalt", "snap", "rename", "a@s", "t"],
            &["basalt", "trash", "restore", "--image-id", "abc", "--image", "new", "-p", "rbd"],
            &["basalt", "config", "global", "set", "global", "rbd_cache", "false"],
            &["basalt", "config", "image", "list", "rbd/vm", "--format", "json"],
            &["basalt", "snap", "limit", "set", "--limit", "3", "vm"],
            &["basalt", "pool", "application", "enable", "p", "rbd"],
            &["basalt", "feature", "enable", "vm", "exclusive-lock", "object-map"],
            &["basalt", "export", "--snap", "s", "rbd/vm", "-"],
            &["basalt", "export", "--image", "vm", "out.img", "--no-progress"],
            &["basalt", "export-diff", "--from-snap", "a", "vm@b", "d.diff"],
            &["basalt", "import", "--object-size", "8M", "--image-feature", "layering", "disk.img", "rbd/ns/vm"],
            &["basalt", "import", "-", "--dest", "vm", "--dest-pool", "p"],
            &["basalt", "import-diff", "-", "vm", "-p", "rbd"],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
