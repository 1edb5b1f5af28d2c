//! Helpers the test binaries share.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use egresslens::query;

/// Runs `sql` over the store and returns its rows of (text, count).
pub(crate) fn query_rows(store: &Path, sql: &str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = runtime.block_on(async {
        let ctx = query::session(store).await.unwrap();
        query::run(&ctx, sql).await.unwrap()
    });
    let mut out = Vec::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            out.push((
                b.column(0).as_string::<i32>().value(row).to_owned(),
                b.column(1).as_primitive::<Int64Type>().value(row),
            ));
        }
    }
    out
}
