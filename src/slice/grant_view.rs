//! The line between a grant and its caller inside the engine. A grant's row
//! filter and masks are planned on their own, as a table the caller's plan
//! reads from: the query optimiser sees no filter it may push through, so
//! no part of a caller's filter is merged with the grant's, reordered
//! before it, or used to prune the dataset's files by statistics of rows
//! outside the grant. The caller's filter runs on the grant's rows only,
//! after their masks: rows outside a grant cannot change an answer's time
//! or make it fail.
//!
//! Plans without a row filter or a mask have no line to keep, and read the
//! dataset's table directly (so a caller's filter there still prunes).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// A grant's rows, masked: the dataset's scan, the grant's row filter,
/// and one masked expression per visible column.
#[derive(Debug)]
pub(super) struct GrantView {
    /// The scan with the grant's row filter.
    rows: LogicalPlan,
    /// Each visible column's (masked) expression, in schema order.
    columns: Vec<Expr>,
    schema: SchemaRef,
}

impl GrantView {
    pub(super) fn new(rows: LogicalPlan, columns: Vec<Expr>) -> Result<Self> {
        let schema = LogicalPlanBuilder::from(rows.clone())
            .project(columns.clone())?
            .build()?
            .schema()
            .inner()
            .clone();
        Ok(Self {
            rows,
            columns,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for GrantView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A base table to the optimiser: unlike a view, it is never inlined
    /// into the caller's plan, and it takes no filter (the default).
    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Only the columns the caller's plan reads are computed; each of
        // them for every row of the grant.
        let columns: Vec<Expr> = match projection {
            Some(indexes) => indexes.iter().map(|&i| self.columns[i].clone()).collect(),
            None => self.columns.clone(),
        };
        let mut plan = LogicalPlanBuilder::from(self.rows.clone()).project(columns)?;
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        let plan = plan.build()?;
        state.create_physical_plan(&plan).await
    }
}
