//! rbd namespaces: create, list, exists, images inside, remove.

use basalt_ceph::{Image, ImageOptions, no_progress};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, unique};

#[test]
fn namespaces_hold_their_own_images() {
    let Some(env) = env("namespaces_hold_their_own_images") else { return };
    let io = env.io();
    let namespace = unique("ns");
    assert!(!io.namespace_exists(&namespace).expect("exists"));
    io.namespace_create(&namespace).expect("create");
    assert_eq!(kind(io.namespace_create(&namespace)), ErrorKind::AlreadyExists);
    assert!(io.namespace_exists(&namespace).expect("exists"));
    assert!(io.namespace_list().expect("list").contains(&namespace));
    assert_eq!(kind(io.namespace_create("")), ErrorKind::InvalidArgument);

    // An image in the namespace is invisible from the default one, and under the same name can coexist.
    let mut ns_io = io.duplicate().expect("dup");
    ns_io.set_namespace(&namespace).expect("set namespace");
    assert_eq!(ns_io.namespace().expect("namespace"), namespace);
    let name = unique("nsimg");
    support::create(&ns_io, &name, 1 << 20);
    assert!(ns_io.image_list().expect("list").iter().any(|entry| entry.name == name));
    assert!(!io.image_list().expect("list").iter().any(|entry| entry.name == name));
    assert_eq!(kind(Image::open(&io, &name)), ErrorKind::NotFound);
    let image = Image::open(&ns_io, &name).expect("open in namespace");
    assert!(image.label().contains(&namespace));

    // A clone across namespaces (format 2).
    image.snap_create("s").expect("snapshot");
    drop(image);
    let child = unique("crossns");
    let clone_v2 = ImageOptions { clone_format: Some(2), ..ImageOptions::default() };
    ns_io.clone_image(&name, "s", &io, &child, &clone_v2).expect("clone into the default namespace");
    let parent = Image::open(&io, &child).expect("open").parent().expect("parent").expect("clone");
    assert_eq!(parent.image.pool_namespace, namespace);
    support::remove_all(&io, &child);

    // Not empty: refused while images or trash entries remain.
    assert_eq!(kind(io.namespace_remove(&namespace)), ErrorKind::Busy);
    ns_io.trash_move(&name, 0).expect("trash move");
    let trashed = ns_io.trash_list().expect("trash list");
    assert_eq!(trashed.len(), 1);
    assert_eq!(kind(io.namespace_remove(&namespace)), ErrorKind::Busy);
    ns_io.trash_restore(&trashed[0].id, &name).expect("restore");
    support::remove_all(&ns_io, &name);
    assert!(ns_io.image_list().expect("list").is_empty());
    let _ = ns_io.image_remove(&name, &mut no_progress());

    io.namespace_remove(&namespace).expect("remove");
    assert!(!io.namespace_exists(&namespace).expect("exists"));
    assert_eq!(kind(io.namespace_remove(&namespace)), ErrorKind::NotFound);

    // librbd refuses images in a namespace that does not exist.
    assert_eq!(kind(ns_io.image_create(&unique("x"), 1 << 20, &support::options())), ErrorKind::NotFound);
}
