//! Black-box tests: a real server built with `Application::build` on a free
//! port, spoken to over HTTP(S) by a real client, bodies decoded.

mod helpers;
mod steward_helpers;

mod access;
mod admin_actions;
mod aggregates;
mod approvals;
mod audit;
mod auth;
mod bodies;
mod bounds;
mod catalog;
mod citation;
mod cli;
mod crash;
mod data;
mod data_swaps;
mod faults;
mod first_hour;
mod glance;
mod governance;
mod health;
mod https;
mod policy;
mod preview;
mod privacy;
mod real_files;
mod review;
mod revocation;
mod rewrite;
mod search;
mod sharing;
mod snapshots;
mod steward_bad_uploads;
mod steward_edit;
mod steward_permissions;
mod steward_register;
mod steward_retire;
mod steward_schema;
mod steward_storage;
mod steward_upload;
mod steward_upload_failures;
mod tables;
mod visas;
mod web;
