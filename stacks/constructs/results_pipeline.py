"""Results pipeline: IoT rule → Firehose → S3 partitioned by plant/line/date, Glue table for Athena."""

from __future__ import annotations

import base64
import json

import aws_cdk as cdk
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from inspector.messages import MAX_RESULTS_PER_BATCH
from stacks.config import PlantConfig
from stacks.constructs._nag import acknowledge_wildcard, arn_text, attr_text
from stacks.constructs.artifact_store import ACCESS_LOGS_PREFIX

RESULTS_PREFIX = "results/"
NONCURRENT_DAYS = 30  # how long a deleted or overwritten result object stays recoverable
# The inspector publishes batches {"v": 1, "results": [<result message v1>, ...]}; the rule
# turns each batch into one Firehose record per result (batch mode).
# The device's IoT policy pins topic level 5 to its own thing name (stacks/policies.py), so a
# batch whose "device" is not the publishing thing is dropped rather than stored under its name.
RESULTS_SQL = (
    "SELECT VALUE results FROM 'lineguard/{plant}/+/+/+/results' WHERE v = 1 AND device = topic(5)"
)
# The cloud's acknowledgement of each batch (docs/results-ack.md): the inspector keeps a batch in
# its journal until this comes back, because through Greengrass a publish is only "spooled".
# Same filter as RESULTS_SQL, so only a batch the results rule stores is acknowledged; a
# Firehose action that fails sends the message, payload included, to the rule's error action
# (IoT developer guide, rule-error-handling.html: "base64OriginalPayload").
ACK_SQL = (
    "SELECT v, device, first_seq, last_seq FROM 'lineguard/{plant}/+/+/+/results'"
    " WHERE v = 1 AND device = topic(5)"
)
# republish-rule-action.html: the topic takes substitution templates; ${topic(5)} is the device.
ACK_TOPIC = "lineguard/{plant}/${{topic(5)}}/ack"
# In batch mode the Firehose action sends the SQL's array as one PutRecordBatch, and "the
# resulting array can't have more than 500 records" (AWS IoT developer guide,
# kinesis-firehose-rule-action.html, batchMode). A device batch holds at most
# inspector.messages.MAX_RESULTS_PER_BATCH results, which must fit.
FIREHOSE_BATCH_MAX_RECORDS = 500
# Result message v1 (edge_component/inspector/messages.py), as Athena columns. ts stays the
# RFC 3339 text here: Athena documents `timestamp.formats` for the Hive JSON SerDe only
# (hive-json-serde.html), not for the OpenX one this table uses (openx-json-serde.html), so
# the dedup view parses it instead.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("v", "int"),
    ("plant", "string"),
    ("station", "string"),
    ("device", "string"),
    ("camera", "string"),
    ("part_id", "string"),
    ("seq", "bigint"),
    ("ts", "string"),
    ("decision", "string"),
    ("score", "double"),
    ("threshold", "double"),
    ("model", "string"),
    ("latency_ms", "double"),
    ("reason", "string"),
)


DEDUP_VIEW_NAME = "results_dedup"
# The view's columns (Hive types): the table's with ts a timestamp, then its partition keys.
DEDUP_VIEW_COLUMNS: tuple[tuple[str, str], ...] = (
    *((name, "timestamp" if name == "ts" else type_) for name, type_ in RESULT_COLUMNS),
    ("line", "string"),
    ("dt", "string"),
)
# How Athena (Trino) names these types in a view definition.
_PRESTO_TYPES = {
    "string": "varchar",
    "int": "integer",
    "bigint": "bigint",
    "double": "double",
    "timestamp": "timestamp(3)",
}


def glue_database_name(plant: str) -> str:
    """Glue database of a plant's results (Glue names take no dashes)."""
    return "lineguard_" + plant.replace("-", "_")


def dedup_view_sql(table: str) -> str:
    """The view's Presto SQL over ``table``: one row per (device, seq), ``ts`` a timestamp.

    A result the device sent again (after a lost acknowledgement) keeps its ``seq`` and is
    byte-identical, so its copies share line and dt too. Those are in the window's PARTITION BY
    so that a query's ``WHERE line/dt`` still prunes partitions through the view: Trino pushes a
    predicate below a window only if it uses the window's partition columns
    (trinodb/trino, PredicatePushDown.visitWindow). ``from_iso8601_timestamp`` gives
    ``timestamp(3) with time zone`` (trino.io docs, functions/datetime); the cast keeps its UTC
    wall time as a ``timestamp(3)``.
    """
    select = ",\n  ".join(
        "CAST(from_iso8601_timestamp(ts) AS timestamp(3)) AS ts" if name == "ts" else name
        for name, _ in DEDUP_VIEW_COLUMNS
    )
    return (
        f"SELECT\n  {select}\nFROM (\n"
        "  SELECT *, row_number() OVER (PARTITION BY device, seq, line, dt ORDER BY ts)"
        " AS copy_number\n"
        f"  FROM {table}\n"
        ")\nWHERE copy_number = 1"
    )


def presto_view_text(sql: str, *, schema: str, columns: tuple[tuple[str, str], ...]) -> str:
    """Glue ``ViewOriginalText`` of an Athena view, as Athena writes it for ``CREATE VIEW``.

    ``/* Presto View: <base64 of the JSON view definition> */``: the format Trino's Hive
    connector decodes (trinodb/trino, plugin/trino-hive/.../ViewReaderUtil.java: VIEW_PREFIX,
    VIEW_SUFFIX, PrestoViewReader), with ``originalSql``, ``catalog``, ``schema`` and
    ``columns`` as mapbox/cloudfriend's ``GluePrestoView`` shortcut writes them.
    """
    definition = {
        "originalSql": sql,
        "catalog": "awsdatacatalog",
        "schema": schema,
        "columns": [{"name": name, "type": _PRESTO_TYPES[type_]} for name, type_ in columns],
    }
    encoded = base64.b64encode(json.dumps(definition, separators=(",", ":")).encode()).decode()
    return f"/* Presto View: {encoded} */"


class ResultsPipeline(Construct):
    """Results bucket, Firehose stream with dynamic partitioning, topic rule, Glue table and view.

    Attributes:
        bucket: where results land (``results/plant=<p>/line=<l>/dt=<yyyy-mm-dd>/``).
        delivery_stream: the Firehose stream.
        rule: the IoT topic rule feeding it.
        ack_rule: the IoT topic rule that acknowledges each stored batch to its device.
        table_name: the Glue table (in ``database_name``) Athena queries.
        view_name: the Athena view over it without resent copies (one row per device and seq).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plant: PlantConfig,
        access_log_bucket: s3.IBucket,
        error_action: iot.CfnTopicRule.ActionProperty,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        if MAX_RESULTS_PER_BATCH > FIREHOSE_BATCH_MAX_RECORDS:
            raise ValueError(
                f"inspector.messages.MAX_RESULTS_PER_BATCH: {MAX_RESULTS_PER_BATCH} results per "
                f"message, but the IoT rule's Firehose action takes at most "
                f"{FIREHOSE_BATCH_MAX_RECORDS} records per message in batch mode"
            )
        stack = cdk.Stack.of(self)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            # Versioned, so a deleted or overwritten result object stays recoverable for
            # NONCURRENT_DAYS; the lifecycle then removes old versions and the delete markers
            # expiry leaves behind, so versioning does not grow the bucket forever.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(plant.monitoring.results_retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_DAYS),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
                # S3 takes no expired-delete-marker cleanup in a rule that expires by age.
                s3.LifecycleRule(
                    id="remove-expired-delete-markers", expired_object_delete_marker=True
                ),
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # The access-log bucket lives in the Shared stack and accepts logs from this account.
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=access_log_bucket.bucket_name,
            log_file_prefix=f"{ACCESS_LOGS_PREFIX}results-{plant.name}/",
        )

        stream_logs = logs.LogGroup(
            self,
            "DeliveryLogs",
            log_group_name=f"/lineguard/{plant.name}/results-delivery",
            retention=logs.RetentionDays.THREE_MONTHS,
            encryption_key=log_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stream_log_stream = logs.LogStream(self, "DeliveryLogStream", log_group=stream_logs)
        role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"),
            description=f"Firehose delivery of plant {plant.name}'s results to S3",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "s3:AbortMultipartUpload",
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                    "s3:PutObject",
                    "s3:GetObject",
                ],
                resources=[
                    self.bucket.bucket_arn,
                    self.bucket.arn_for_objects(f"{RESULTS_PREFIX}*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"/lineguard/{plant.name}/results-delivery:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        prefix = f"{RESULTS_PREFIX}plant={plant.name}/"
        self.delivery_stream = firehose.CfnDeliveryStream(
            self,
            "Stream",
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="AWS_OWNED_CMK"
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=self.bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=prefix
                + "line=!{partitionKeyFromQuery:line}/dt=!{partitionKeyFromQuery:dt}/",
                error_output_prefix=f"{RESULTS_PREFIX}errors/!{{firehose:error-output-type}}/dt=!{{timestamp:yyyy-MM-dd}}/",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=300, size_in_m_bs=64
                ),
                compression_format="GZIP",
                dynamic_partitioning_configuration=firehose.CfnDeliveryStream.DynamicPartitioningConfigurationProperty(
                    enabled=True,
                    retry_options=firehose.CfnDeliveryStream.RetryOptionsProperty(
                        duration_in_seconds=300
                    ),
                ),
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True,
                    processors=[
                        firehose.CfnDeliveryStream.ProcessorProperty(
                            type="MetadataExtraction",
                            parameters=[
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="MetadataExtractionQuery",
                                    parameter_value="{line:.line,dt:.ts[0:10]}",
                                ),
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="JsonParsingEngine", parameter_value="JQ-1.6"
                                ),
                            ],
                        ),
                        # Firehose "concatenates data without any delimiters" by default
                        # (Firehose developer guide, basic-deliver.html); this processor puts
                        # a newline after each record (dynamic-partitioning-new-line-delimiter:
                        # "add a new line delimiter between records in objects that are
                        # delivered to Amazon S3"), so every result is one JSON line. The rule
                        # adds no separator of its own: with both, every result is followed by
                        # an empty line, which the OpenX JSON reader turns into a row of nulls
                        # (trinodb/trino, lib/trino-hive-formats/.../openxjson/README.md).
                        firehose.CfnDeliveryStream.ProcessorProperty(
                            type="AppendDelimiterToRecord",
                            parameters=[
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="Delimiter", parameter_value="\\n"
                                )
                            ],
                        ),
                    ],
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=stream_logs.log_group_name,
                    log_stream_name=stream_log_stream.log_stream_name,
                ),
            ),
        )
        # Firehose checks its S3 access at creation: create the role's policy first.
        policy = role.node.find_child("DefaultPolicy")
        self.delivery_stream.node.add_dependency(policy)

        rule_role = iam.Role(
            self,
            "RuleRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT rule of plant {plant.name}: put results into Firehose",
        )
        rule_role.add_to_policy(
            iam.PolicyStatement(
                actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
                resources=[self.delivery_stream.attr_arn],
            )
        )
        self.rule = iot.CfnTopicRule(
            self,
            "Rule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=(
                    f"LineGuard {plant.name}: result batches (at most {MAX_RESULTS_PER_BATCH} "
                    "results) to Firehose, one record each"
                ),
                sql=RESULTS_SQL.format(plant=plant.name),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        firehose=iot.CfnTopicRule.FirehoseActionProperty(
                            delivery_stream_name=self.delivery_stream.ref,
                            role_arn=rule_role.role_arn,
                            batch_mode=True,
                            # no separator: Firehose appends the newline (see its processors)
                        )
                    )
                ],
                error_action=error_action,
            ),
        )

        ack_role = iam.Role(
            self,
            "AckRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description=f"IoT rule of plant {plant.name}: acknowledge result batches to devices",
        )
        ack_role.add_to_policy(
            iam.PolicyStatement(
                actions=["iot:Publish"],
                resources=[
                    stack.format_arn(
                        service="iot",
                        resource="topic",
                        resource_name=f"lineguard/{plant.name}/*/ack",
                    )
                ],
            )
        )
        acknowledge_wildcard(
            ack_role,
            arn_text(ack_role, "iot", f"topic/lineguard/{plant.name}/*/ack"),
            "Publishes the acknowledgement of each device on its own "
            f"lineguard/{plant.name}/<device>/ack topic; devices are not CloudFormation resources.",
        )
        self.ack_rule = iot.CfnTopicRule(
            self,
            "AckRule",
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                description=(
                    f"LineGuard {plant.name}: acknowledge each stored result batch "
                    "(first_seq..last_seq) to the device that sent it"
                ),
                sql=ACK_SQL.format(plant=plant.name),
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        republish=iot.CfnTopicRule.RepublishActionProperty(
                            topic=ACK_TOPIC.format(plant=plant.name),
                            role_arn=ack_role.role_arn,
                            qos=1,
                        )
                    )
                ],
                error_action=error_action,
            ),
        )

        # Glue table over the partitioned objects; partition projection, so no crawler.
        self.database_name = glue_database_name(plant.name)
        database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=plant.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description=f"LineGuard results of plant {plant.name}",
            ),
        )
        self.table_name = "results"
        location = f"s3://{self.bucket.bucket_name}/{prefix}"
        table = glue.CfnTable(
            self,
            "Table",
            catalog_id=plant.account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=self.table_name,
                description="Result messages v1, one row per inspected part",
                table_type="EXTERNAL_TABLE",
                parameters={
                    "classification": "json",
                    "compressionType": "gzip",
                    "projection.enabled": "true",
                    "projection.line.type": "enum",
                    "projection.line.values": ",".join(line.name for line in plant.lines),
                    "projection.dt.type": "date",
                    "projection.dt.format": "yyyy-MM-dd",
                    "projection.dt.range": "2026-01-01,NOW",
                    "projection.dt.interval": "1",
                    "projection.dt.interval.unit": "DAYS",
                    "storage.location.template": location + "line=${line}/dt=${dt}/",
                },
                partition_keys=[
                    glue.CfnTable.ColumnProperty(name="line", type="string"),
                    glue.CfnTable.ColumnProperty(name="dt", type="string"),
                ],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    location=location,
                    input_format="org.apache.hadoop.mapred.TextInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library="org.openx.data.jsonserde.JsonSerDe",
                        parameters={"ignore.malformed.json": "true"},
                    ),
                    columns=[
                        glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in RESULT_COLUMNS
                    ],
                ),
            ),
        )
        table.add_resource_dependency(database)

        # Athena view without resent copies: what queries should use. A Glue table of type
        # VIRTUAL_VIEW that Athena reads as its own view when presto_view is "true" and the
        # comment is "Presto View" (trinodb/trino ViewReaderUtil.isTrinoView; mapbox/cloudfriend
        # lib/shortcuts/glue-presto-view.js writes the same parameters and expanded text). No
        # Glue description: it would replace that comment (trinodb/trino, metastore/glue/
        # GlueConverter.fromGlueTable), and Trino writes none for its own views.
        self.view_name = DEDUP_VIEW_NAME
        view = glue.CfnTable(
            self,
            "DedupView",
            catalog_id=plant.account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=self.view_name,
                table_type="VIRTUAL_VIEW",
                parameters={"presto_view": "true", "comment": "Presto View"},
                view_original_text=presto_view_text(
                    dedup_view_sql(self.table_name),
                    schema=self.database_name,
                    columns=DEDUP_VIEW_COLUMNS,
                ),
                view_expanded_text="/* Presto View */",
                # SerDe info present though empty: Trino reads no Glue table without one
                # (GlueConverter.fromGlueStorage: "StorageDescriptor SerDeInfo is null").
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[
                        glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in DEDUP_VIEW_COLUMNS
                    ],
                    location="",
                    serde_info=glue.CfnTable.SerdeInfoProperty(),
                ),
            ),
        )
        view.add_resource_dependency(table)
        acknowledge_wildcard(
            role,
            f"{attr_text(cfn_bucket, 'Arn')}/{RESULTS_PREFIX}*",
            "Firehose writes objects it names at delivery time, only under results/ of this "
            "plant's results bucket.",
        )
        acknowledge_wildcard(
            role,
            arn_text(role, "logs", f"log-group:/lineguard/{plant.name}/results-delivery:*"),
            "Firehose writes delivery errors to the streams of its own log group only.",
        )
