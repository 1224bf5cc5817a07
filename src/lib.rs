//! eddy's runtime: the source operator, Kafka plumbing, sink operators and the pipeline that
//! wires them to the dataflows on timely workers. The `eddy` binary is a thin CLI over it.

pub mod cli;
pub mod demo;
pub mod fence;
pub mod kafka;
pub mod ops;
pub mod pipeline;
pub mod reader;
pub mod replay;
pub mod sink_op;
pub mod source;
pub mod status;
pub mod version;
