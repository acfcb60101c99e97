//! The `aws_s3` config, now in [`connectors::s3`](crate::spec::connectors::s3); this module
//! keeps the names it had.

pub use crate::spec::connectors::s3::{AwsS3Config, check_aws_s3};
