//! What a Flight SQL caller is told about the catalogue: one catalogue
//! (`sluice`), sectors as schemas, and as tables the datasets the caller
//! may read, each with the columns the caller would get (masked columns in
//! their served types, hidden ones absent). Datasets the caller may not
//! read are not listed; the HTTP catalogue stays the place to discover them
//! and ask for access.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{Nullable, Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType};

use crate::auth::Caller;
use crate::formats::sanitized_schema;
use crate::http::AppState;
use crate::policy::{self, Decision};
use crate::slice::SliceRequest;

/// The one catalogue's name.
pub(super) const CATALOG: &str = "sluice";

/// A dataset as a table the caller may read.
pub(super) struct Table {
    pub(super) sector: String,
    pub(super) dataset: String,
    pub(super) schema: SchemaRef,
}

/// The datasets `caller` may read (under `grant`, if they name one), with
/// the schema each answer would have.
pub(super) fn tables(state: &AppState, caller: &Caller, grant: Option<&str>) -> Vec<Table> {
    let policy = state.policy.current();
    let today = time::OffsetDateTime::now_utc().date();
    let catalog = state.catalog.snapshot();
    let mut tables = Vec::new();
    for dataset in catalog.datasets().filter(|d| d.manifest.is_live()) {
        let Decision::Allow(plan) =
            policy::evaluate(&policy, caller, &dataset.manifest, grant, today)
        else {
            continue;
        };
        let Some(version) = dataset.current() else {
            continue;
        };
        let schema = if plan.mode.serves_rows() {
            // The plan of the whole slice, never run: its schema is the
            // answer's, masks and all.
            match state.engine.plan(
                version,
                &plan,
                &SliceRequest::default(),
                state.limits.max_filter_bytes,
            ) {
                Ok(df) => sanitized_schema(df.schema().as_arrow()),
                Err(_) => continue,
            }
        } else {
            // Tables of counts over the fields the caller may group by.
            let fields: Vec<Field> = plan
                .columns
                .iter()
                .filter_map(|c| {
                    version
                        .schema
                        .field_with_name(c.name.as_str())
                        .ok()
                        .cloned()
                })
                .collect();
            Arc::new(Schema::new(fields))
        };
        tables.push(Table {
            sector: dataset.manifest.sector.clone(),
            dataset: dataset.id().to_string(),
            schema,
        });
    }
    tables
}

/// What the server says about itself (`GetSqlInfo`): read-only, no
/// transactions, double-quoted identifiers.
pub(super) fn sql_info() -> Result<SqlInfoData, arrow_flight::error::FlightError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Sluice");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.build()
}

/// The SQL types answers are made of (`GetXdbcTypeInfo`, which JDBC's
/// `DatabaseMetaData.getTypeInfo` and BI tools ask for): the Arrow types
/// of the catalogue's columns as their usual SQL names. Nothing is created
/// here, so no type takes parameters.
pub(super) fn xdbc_types() -> Result<XdbcTypeInfoData, arrow_flight::error::FlightError> {
    use XdbcDataType as T;
    let types = [
        ("BOOLEAN", T::XdbcBit, Some(1), None),
        ("SMALLINT", T::XdbcSmallint, Some(16), Some(2)),
        ("INTEGER", T::XdbcInteger, Some(32), Some(2)),
        ("BIGINT", T::XdbcBigint, Some(64), Some(2)),
        ("DOUBLE", T::XdbcDouble, Some(53), Some(2)),
        ("VARCHAR", T::XdbcVarchar, None, None),
        ("DATE", T::XdbcDate, Some(10), None),
        ("TIMESTAMP", T::XdbcTimestamp, Some(26), None),
    ];
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for (name, data_type, column_size, num_prec_radix) in types {
        let quoted = matches!(data_type, T::XdbcVarchar | T::XdbcDate | T::XdbcTimestamp);
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: quoted.then(|| "'".into()),
            literal_suffix: quoted.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: data_type == T::XdbcVarchar,
            searchable: Searchable::Full,
            unsigned_attribute: num_prec_radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: None,
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix,
            interval_precision: None,
        });
    }
    builder.build()
}
