//! HTTP tests of the real app against real Redis: one test binary.
mod across_nodes;
mod bad_input;
mod cluster;
mod count;
mod failover;
mod faults;
mod health;
mod helpers;
mod operations;
mod page_and_logout;
mod redis_outage;
mod round_trips;
mod session_api;
mod startup;
mod tls;
mod user_sessions;
