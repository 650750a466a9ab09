//! The format version in the data dir, checked at open.

use blockyard::store::{Store, FORMAT_FILE, FORMAT_VERSION};

use crate::support::{blockyard_in, stderr};

#[test]
fn a_data_dir_from_before_the_format_file_is_version_1_and_gets_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Store::open(&data).unwrap());
    // What a release before the format file left: sled's files, no `format`.
    let _ = std::fs::remove_file(data.join(FORMAT_FILE));
    drop(Store::open(&data).unwrap());
    assert_eq!(FORMAT_VERSION, 2);
    assert_eq!(
        std::fs::read_to_string(data.join(FORMAT_FILE)).unwrap(),
        "2\n"
    );
}

#[test]
fn a_version_1_data_dir_is_migrated_to_version_2() {
    // Version 1's history entries are JSON, which version 2 still reads (tested with the
    // encoding, `store::history::tests::a_data_dir_written_as_json_reads_back_identically_and_prunes`):
    // migrating writes the new version only.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Store::open(&data).unwrap());
    std::fs::write(data.join(FORMAT_FILE), "1\n").unwrap();
    drop(Store::open(&data).unwrap());
    assert_eq!(
        std::fs::read_to_string(data.join(FORMAT_FILE)).unwrap(),
        "2\n"
    );
}

#[test]
fn a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Store::open(&data).unwrap());
    std::fs::write(data.join(FORMAT_FILE), "3\n").unwrap();
    let err = Store::open(&data).unwrap_err();
    let message = format!(
        "the data dir `{}` has format version 3, newer than this blockyard reads (version 2); run the blockyard release that wrote it, or restore a backup this release made (`blockyard store restore`)",
        data.display()
    );
    assert_eq!(err.to_string(), message);
    assert_eq!(
        std::fs::read_to_string(data.join(FORMAT_FILE)).unwrap(),
        "3\n"
    );
    // The commands say the same.
    let out = blockyard_in(
        dir.path(),
        &["history", "list", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&message), "{}", stderr(&out));
}

#[test]
fn an_unreadable_format_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(Store::open(&data).unwrap());
    std::fs::write(data.join(FORMAT_FILE), "version one").unwrap();
    let err = Store::open(&data).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the data dir `{}` has an unreadable format version in `{}` (\"version one\"); it holds one number, such as `2`: restore it, or restore the data dir from a backup",
            data.display(),
            data.join(FORMAT_FILE).display()
        )
    );
}
