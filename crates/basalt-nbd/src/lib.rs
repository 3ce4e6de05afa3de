//! basalt's data path: an NBD server (fixed newstyle) that serves images and snapshots of any Backend.
