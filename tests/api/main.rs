//! Black-box tests: a real server built with `Application::build` on a free
//! port, spoken to over HTTP(S) by a real client, bodies decoded.

mod helpers;

mod access;
mod aggregates;
mod audit;
mod auth;
mod bodies;
mod bounds;
mod catalog;
mod citation;
mod cli;
mod crash;
mod data;
mod first_hour;
mod governance;
mod health;
mod https;
mod policy;
mod privacy;
mod revocation;
mod search;
mod steward;
mod visas;
