//! `meshctl`: the mesh's command line, and the local runtime that runs the
//! whole mesh on one Linux host in network-namespace pods.

pub mod cli;
pub mod commands;
pub mod install;
pub mod k8s;
pub mod local;
pub mod output;
pub mod viz;
