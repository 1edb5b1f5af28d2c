//! Ad-hoc SQL over the store (DataFusion): the store's tables registered with their explicit
//! schema and Hive partition columns (`date`, `hour`), read-only, and the canned queries of
//! `queries/` built into the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{RecordBatch, StringArray, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};

use crate::findings::{FindingKind, FindingReport, sort_report};
use crate::parse::time::format_rfc3339_ms;
use crate::schema;
use crate::store::remote::{Remote, RemoteError};
use crate::store::{ACCESS_LOG, FINDINGS, MESH_HOSTS, PROBES, REJECTS, ZTUNNEL_CONN};

/// Partition columns of every store table, in directory order.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];
/// Partition columns of every table on object storage, in key order: each collector writes
/// below its own `cluster=…/collector=…/` ([`crate::store::remote`]).
pub const REMOTE_PARTITION_COLUMNS: [&str; 4] = ["cluster", "collector", "date", "hour"];

/// The canned queries of `queries/`, by name.
pub const CANNED: &[(&str, &str)] = &[
    ("top-hosts", include_str!("../queries/top-hosts.sql")),
    ("errors-by-host", include_str!("../queries/errors-by-host.sql")),
    ("latency-by-host", include_str!("../queries/latency-by-host.sql")),
    ("tls-origination", include_str!("../queries/tls-origination.sql")),
    ("new-hosts", include_str!("../queries/new-hosts.sql")),
    ("top-sources", include_str!("../queries/top-sources.sql")),
    ("passthrough", include_str!("../queries/passthrough.sql")),
    ("rejects-over-time", include_str!("../queries/rejects-over-time.sql")),
    ("host-rate", include_str!("../queries/host-rate.sql")),
    ("findings", include_str!("../queries/findings.sql")),
];

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL itself is wrong (syntax, unknown column, a statement that would write).
    #[error("{0}")]
    Sql(String),
    #[error("no canned query @{0}; `egresslens query --list` shows them")]
    UnknownCanned(String),
    #[error("query @{name} needs --param {param}=VALUE")]
    MissingParam { name: String, param: String },
    #[error("cannot run the query")]
    Engine(#[source] DataFusionError),
    #[error("cannot write the result")]
    Output(#[source] std::io::Error),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        QueryError::Engine(error)
    }
}

/// Errors of planning a statement are the statement's (syntax, unknown names, a write where
/// only reads are allowed), except those of reaching the data.
fn planning_error(error: DataFusionError) -> QueryError {
    match error.find_root() {
        DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::ParquetError(_)
        | DataFusionError::ResourcesExhausted(_)
        | DataFusionError::Internal(_) => QueryError::Engine(error),
        _ => QueryError::Sql(error.strip_backtrace()),
    }
}

/// The first comment line of a canned query: the question it answers.
pub fn describe(sql: &str) -> &str {
    sql.lines().next().and_then(|l| l.strip_prefix("--")).map_or("", str::trim)
}

/// The text of `@name` with `{{param}}` placeholders filled in as SQL string literals.
pub fn canned(name: &str, params: &[(String, String)]) -> Result<String, QueryError> {
    let (_, sql) = CANNED
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| QueryError::UnknownCanned(name.to_owned()))?;
    let mut sql = (*sql).to_owned();
    for (key, value) in params {
        sql = sql.replace(&format!("{{{{{key}}}}}"), &format!("'{}'", value.replace('\'', "''")));
    }
    if let Some(start) = sql.find("{{") {
        let param = sql[start + 2..].split("}}").next().unwrap_or_default().to_owned();
        return Err(QueryError::MissingParam { name: name.to_owned(), param });
    }
    Ok(sql)
}

/// Makes a table's schema.
type SchemaFn = fn() -> SchemaRef;

/// The store's tables and their schemas.
const TABLES: [(&str, SchemaFn); 6] = [
    (ACCESS_LOG, schema::access_log),
    (REJECTS, schema::rejects),
    (ZTUNNEL_CONN, schema::ztunnel_conn),
    (FINDINGS, schema::findings),
    (PROBES, schema::probes),
    (MESH_HOSTS, schema::mesh_hosts),
];

fn with_partitions(table: SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(PARTITION_COLUMNS.map(|name| Field::new(name, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

/// Where a store is: a directory, or object storage.
#[derive(Debug, Clone)]
pub enum StoreAt {
    Dir(PathBuf),
    Remote(Remote),
}

impl StoreAt {
    /// A store as `--store` names it: a URL (`s3://bucket/prefix`, …) or a directory.
    pub fn parse(text: &str, s3_endpoint: Option<&str>) -> Result<StoreAt, RemoteError> {
        if text.contains("://") {
            Ok(StoreAt::Remote(Remote::open(text, s3_endpoint)?))
        } else {
            Ok(StoreAt::Dir(PathBuf::from(text)))
        }
    }

    /// A session over the store's tables.
    pub async fn session(&self) -> Result<SessionContext, QueryError> {
        match self {
            StoreAt::Dir(dir) => session(dir).await,
            StoreAt::Remote(remote) => remote_session(remote).await,
        }
    }
}

impl std::fmt::Display for StoreAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreAt::Dir(dir) => write!(f, "{}", dir.display()),
            StoreAt::Remote(remote) => f.write_str(remote.url()),
        }
    }
}

/// A session with the store's tables registered. A table whose directory does not exist yet
/// is an empty table of the right schema, so every query runs on an empty store.
pub async fn session(store: &Path) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    for (name, table_schema) in TABLES {
        let table_schema = table_schema();
        let dir = store.join(name);
        if !dir.is_dir() {
            let empty = MemTable::try_new(with_partitions(table_schema), vec![vec![]])?;
            ctx.register_table(name, Arc::new(empty))?;
            continue;
        }
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        ctx.register_table(name, listing(url, table_schema, &PARTITION_COLUMNS)?)?;
    }
    Ok(ctx)
}

/// The Parquet files below `url`, read with `file_schema` and Hive `partitions`.
fn listing(
    url: ListingTableUrl,
    file_schema: SchemaRef,
    partitions: &[&str],
) -> Result<Arc<ListingTable>, QueryError> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partitions.iter().map(|c| ((*c).to_owned(), DataType::Utf8)).collect(),
        );
    let config =
        ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// A session over a store on object storage: one table per store table across every
/// collector's keys, with `cluster` and `collector` partition columns before `date` and
/// `hour`. A table's own `cluster` column is read from the keys: a collector writes its own
/// `--cluster` into both.
pub async fn remote_session(remote: &Remote) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let base = ListingTableUrl::parse(format!("{}/", remote.url()))?;
    ctx.register_object_store(base.object_store().as_ref(), remote.object_store());
    register_remote_tables(&ctx, remote)?;
    Ok(ctx)
}

/// A session whose queries run on a Ballista cluster (its scheduler at `df://HOST:PORT`) over
/// a store on object storage: the SQL is planned here and sent, and the cluster's executors
/// scan the store with their own credentials. `s3_endpoint` goes to them as `s3.endpoint`;
/// no credential is sent.
pub async fn ballista_session(
    scheduler: &str,
    remote: &Remote,
    s3_endpoint: Option<&str>,
) -> Result<SessionContext, QueryError> {
    use ballista::prelude::SessionContextExt;
    let mut config = ballista_core::object_store::session_config_with_s3_support();
    if let Some(endpoint) = s3_endpoint {
        let options = config.options_mut();
        options.set("s3.endpoint", endpoint)?;
        options.set("s3.allow_http", &endpoint.starts_with("http://").to_string())?;
    }
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(scheduler, state).await?;
    register_remote_tables(&ctx, remote)?;
    Ok(ctx)
}

/// Registers one table per store table across every collector's keys of `remote` (see
/// [`remote_session`]); whoever runs the plan reads the objects.
pub fn register_remote_tables(ctx: &SessionContext, remote: &Remote) -> Result<(), QueryError> {
    for (name, table_schema) in TABLES {
        let table_schema = table_schema();
        let url = ListingTableUrl::parse(format!("{}/{name}/", remote.url()))?;
        let file_fields = table_schema.fields().iter().filter(|f| f.name() != "cluster");
        let file_schema = Arc::new(Schema::new(file_fields.cloned().collect::<Vec<_>>()));
        ctx.register_table(name, listing(url, file_schema, &REMOTE_PARTITION_COLUMNS)?)?;
    }
    Ok(())
}

/// Runs one read-only statement: no DDL, no DML (`COPY … TO` included), no `SET`.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    Ok(run_with_schema(ctx, sql).await?.1)
}

/// [`run`], with the result's schema (which no batch carries when there are no rows).
pub async fn run_with_schema(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let options =
        SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, options).await.map_err(planning_error)?;
    let schema = SchemaRef::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.collect().await?))
}

/// The findings the store holds (the canned query `@findings`), most severe first.
pub async fn findings(ctx: &SessionContext) -> Result<Vec<FindingReport>, QueryError> {
    let batches = run(ctx, &canned("findings", &[])?).await?;
    let mut report = Vec::new();
    for batch in &batches {
        let text = |column: &str| -> Result<&StringArray, QueryError> {
            batch
                .column_by_name(column)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| QueryError::Sql(format!("@findings gives no text column {column}")))
        };
        let time = |column: &str| -> Result<&TimestampNanosecondArray, QueryError> {
            batch
                .column_by_name(column)
                .and_then(|c| c.as_any().downcast_ref())
                .ok_or_else(|| QueryError::Sql(format!("@findings gives no time column {column}")))
        };
        let count = batch
            .column_by_name("count")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| QueryError::Sql("@findings gives no count column".into()))?;
        let (kind, host, source) = (text("kind")?, text("host")?, text("source")?);
        let (detail, evidence, origin) = (text("detail")?, text("evidence")?, text("origin")?);
        let (first, last) = (time("first_seen")?, time("last_seen")?);
        for row in 0..batch.num_rows() {
            let Some(kind) = FindingKind::parse(kind.value(row)) else {
                // Written by a newer egresslens: shown by `query`, not here.
                continue;
            };
            report.push(FindingReport {
                kind,
                severity: kind.severity(),
                host: host.value(row).to_owned(),
                source: source.value(row).to_owned(),
                count: count.value(row),
                first_seen: format_rfc3339_ms(first.value(row)),
                last_seen: format_rfc3339_ms(last.value(row)),
                detail: detail.value(row).to_owned(),
                evidence: evidence.value(row).to_owned(),
                origin: origin.value(row).to_owned(),
            });
        }
    }
    sort_report(&mut report);
    Ok(report)
}

/// Result formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    Table,
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON row object per line.
    Ndjson,
}

/// Writes query results in `format`.
pub fn write_results(
    out: &mut impl Write,
    batches: &[RecordBatch],
    format: ResultFormat,
) -> Result<(), QueryError> {
    use datafusion::arrow::{csv, json};
    let arrow = |e: datafusion::arrow::error::ArrowError| QueryError::Engine(e.into());
    match format {
        ResultFormat::Table => {
            let table =
                datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(arrow)?;
            writeln!(out, "{table}").map_err(QueryError::Output)
        }
        ResultFormat::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(out);
            batches.iter().try_for_each(|b| writer.write(b)).map_err(arrow)
        }
        ResultFormat::Json => {
            let mut writer = json::ArrayWriter::new(&mut *out);
            batches.iter().try_for_each(|b| writer.write(b)).map_err(arrow)?;
            writer.finish().map_err(arrow)?;
            writeln!(out).map_err(QueryError::Output)
        }
        ResultFormat::Ndjson => {
            let mut writer = json::LineDelimitedWriter::new(out);
            batches.iter().try_for_each(|b| writer.write(b)).map_err(arrow)?;
            writer.finish().map_err(arrow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canned_query_says_what_it_answers() {
        for (name, sql) in CANNED {
            let question = describe(sql);
            assert!(question.ends_with('?'), "@{name}: {question:?}");
        }
    }

    #[test]
    fn params_become_quoted_literals_and_missing_ones_are_named() {
        let sql = canned("host-rate", &[("host".into(), "o'brien.com".into())]).unwrap();
        assert!(sql.contains("= 'o''brien.com'"), "{sql}");
        match canned("host-rate", &[]) {
            Err(QueryError::MissingParam { param, .. }) => assert_eq!(param, "host"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(canned("nope", &[]), Err(QueryError::UnknownCanned(_))));
    }
}
