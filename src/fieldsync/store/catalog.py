"""The platform's own tables: metadata, migrations, the version sequence and the change log.

``fs_change`` is the change log sync stands on. Every write takes one version (from the
``fs_sequence`` row named ``version`` on SQLite, from the sequence ``fs_version_seq`` on
PostgreSQL: see :mod:`fieldsync.store.versions`) and adds one row here:

    version    the write's version (also the row's ``versionnumber``)
    tablename  the table written
    recordid   the row written
    operation  create, update, delete, assign, associate, disassociate
    changed    the columns the write set (``null`` for create and delete: all of them)
    old        the values before the write of what scope depends on: the changed columns,
               plus owner and business unit; a delete keeps the whole old row (the tombstone)
    userid     who wrote
    changedon  when the server applied it
"""

from __future__ import annotations

import sqlalchemy as sa

from fieldsync.store.sqltypes import JSONType, UTCDateTime

metadata = sa.MetaData()

fs_meta = sa.Table(
    "fs_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

fs_migration = sa.Table(
    "fs_migration",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("appliedon", UTCDateTime, nullable=False),
)

fs_table = sa.Table(
    "fs_table",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("definition", JSONType, nullable=False),
)

fs_relationship = sa.Table(
    "fs_relationship",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("definition", JSONType, nullable=False),
)

fs_sequence = sa.Table(
    "fs_sequence",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

fs_change = sa.Table(
    "fs_change",
    metadata,
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("tablename", sa.String(64), nullable=False),
    sa.Column("recordid", sa.Uuid, nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("changed", JSONType),
    sa.Column("old", JSONType),
    sa.Column("userid", sa.Uuid),
    sa.Column("changedon", UTCDateTime, nullable=False),
    sa.Index("ix_fs_change_table_version", "tablename", "version"),
    sa.Index("ix_fs_change_record", "recordid"),
)

fs_file = sa.Table(
    "fs_file",
    metadata,
    sa.Column("fileid", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("mimetype", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("createdon", UTCDateTime, nullable=False),
    # added by migration 0003_files (fieldsync.files): who uploaded it; an image's thumbnail
    sa.Column("createdby", sa.Uuid),
    sa.Column("thumbnail", sa.String(64)),
    sa.Column("thumbnailsize", sa.BigInteger),
    # added by migration 0004_file_references: when a row first referenced the file (null: an
    # upload not yet attached to any row, which only its uploader may attach)
    sa.Column("attachedon", UTCDateTime),
    # added by migration 0006_image_files: the bytes were checked to be an image when they
    # arrived; its thumbnail (null until made) may come later, off the upload's request
    sa.Column("isimage", sa.Boolean),
    # the images whose thumbnail is still to be made: few at any time
    sa.Index(
        "ix_fs_file_thumbnail_due",
        "createdon",
        sqlite_where=sa.text("isimage AND thumbnail IS NULL"),
        postgresql_where=sa.text("isimage AND thumbnail IS NULL"),
    ),
)

# -- files: uploads in progress (the bytes are staged in the blob store) ------------------

fs_upload = sa.Table(
    "fs_upload",
    metadata,
    sa.Column("uploadid", sa.Uuid, primary_key=True),
    sa.Column("fileid", sa.Uuid, nullable=False, unique=True),
    sa.Column("userid", sa.Uuid, nullable=False),
    sa.Column("tablename", sa.String(64), nullable=False),
    sa.Column("columnname", sa.String(64), nullable=False),
    sa.Column("recordid", sa.Uuid),  # a Web API upload: the row it is written to at the end
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("mimetype", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64)),  # declared by a device; null: computed at the end
    sa.Column("received", sa.BigInteger, nullable=False),
    sa.Column("createdon", UTCDateTime, nullable=False, index=True),
    # added by migration 0006_file_batches: changed by every chunk stored (and by a reset), so
    # a server process knows whether the bytes staged are still the ones it hashed
    sa.Column("stamp", sa.String(32)),
)

# -- sign-in: passwords, sessions (refresh tokens), API tokens, failed attempts -------------

fs_credential = sa.Table(
    "fs_credential",
    metadata,
    sa.Column("userid", sa.Uuid, primary_key=True),
    sa.Column("passwordhash", sa.Text, nullable=False),
    sa.Column("changedon", UTCDateTime, nullable=False),
)

fs_session = sa.Table(
    "fs_session",
    metadata,
    sa.Column("sessionid", sa.Uuid, primary_key=True),
    sa.Column("userid", sa.Uuid, nullable=False, index=True),
    sa.Column("refreshhash", sa.String(64), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("createdon", UTCDateTime, nullable=False),
    sa.Column("expireson", UTCDateTime, nullable=False),
    sa.Column("revokedon", UTCDateTime),
    # added by migration 0004_refresh_grace (fieldsync.identity.auth): the secret the
    # session's refresh tokens derive from, the one rotated last, and when
    sa.Column("seed", sa.String(64)),
    sa.Column("previoushash", sa.String(64)),
    sa.Column("rotatedon", UTCDateTime),
)

fs_apitoken = sa.Table(
    "fs_apitoken",
    metadata,
    sa.Column("tokenid", sa.Uuid, primary_key=True),
    sa.Column("userid", sa.Uuid, nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("tokenhash", sa.String(64), nullable=False),
    sa.Column("createdon", UTCDateTime, nullable=False),
    sa.Column("expireson", UTCDateTime),
    sa.Column("revokedon", UTCDateTime),
)

fs_signin_failure = sa.Table(
    "fs_signin_failure",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("username", sa.String(1024), nullable=False, index=True),
    sa.Column("address", sa.String(64), nullable=False, index=True),
    sa.Column("at", UTCDateTime, nullable=False),
)

# Service protection counts shared by the server processes (fieldsync.http.throttle): per
# process, user and time bucket, the requests and execution time counted; the row of bucket
# -1 holds the process's requests in flight for the user, as of ``seen`` (epoch seconds).
fs_throttle = sa.Table(
    "fs_throttle",
    metadata,
    sa.Column("processid", sa.String(32), primary_key=True),
    sa.Column("userid", sa.Uuid, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("milliseconds", sa.BigInteger, nullable=False),
    sa.Column("active", sa.Integer, nullable=False),
    sa.Column("seen", sa.BigInteger, nullable=False),
    sa.Index("ix_fs_throttle_userid_bucket", "userid", "bucket"),
)


# -- the security audit log (fieldsync.store.audit): refusals and security changes --------

fs_audit = sa.Table(
    "fs_audit",
    metadata,
    sa.Column(
        "auditid",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("createdon", UTCDateTime, nullable=False, index=True),
    sa.Column("event", sa.String(64), nullable=False, index=True),
    sa.Column("userid", sa.Uuid, index=True),  # who acted (null: not signed in)
    sa.Column("username", sa.String(256)),  # the name given (a refused sign-in has no id)
    sa.Column("address", sa.String(64)),  # the client's IP address
    sa.Column("target", sa.String(512)),  # what it was about: a row, a device, a token
    sa.Column("outcome", sa.String(32), nullable=False),  # refused, done, suppressed
    sa.Column("detail", JSONType),  # the refusal's message; a summary row's count
)

# -- sync: devices and the client changes already applied ---------------------------------

fs_device = sa.Table(
    "fs_device",
    metadata,
    sa.Column("deviceid", sa.String(64), primary_key=True),
    sa.Column("userid", sa.Uuid, nullable=False, index=True),
    sa.Column("app", sa.String(128), nullable=False),
    sa.Column("profileid", sa.Uuid),
    sa.Column("profileversion", sa.Integer),
    sa.Column("sdkversion", sa.String(32)),
    sa.Column("registeredon", UTCDateTime, nullable=False),
    sa.Column("lastsyncon", UTCDateTime),
    sa.Column("pendingchanges", sa.Integer),
    # added by migration 0005_device_inventory (fieldsync.sync.inventory): the last inventory
    # report's verdict, the last purge or wipe receipt, and a remote wipe an administrator asked
    sa.Column("inventoryon", UTCDateTime),
    sa.Column("inventorystatus", sa.String(16)),  # match, mismatch (a table differed)
    sa.Column("receipton", UTCDateTime),  # the last purge or wipe receipt
    sa.Column("wiperequestedon", UTCDateTime),
    sa.Column("wiperequestedby", sa.Uuid),
    sa.Column("wipedon", UTCDateTime),
)
# the last inventory report of each table of a device: what the device said it holds, what
# its scope holds, the verdict; ``heal`` counts targeted re-scopes (a download cursor issued
# before the last one starts the table over)
fs_device_inventory = sa.Table(
    "fs_device_inventory",
    metadata,
    sa.Column("deviceid", sa.String(64), primary_key=True),
    sa.Column("tablename", sa.String(64), primary_key=True),
    sa.Column("reportedon", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # match, mismatch, behind, clock
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(16), nullable=False),
    sa.Column("expectedrows", sa.BigInteger),
    sa.Column("expectedchecksum", sa.String(16)),
    sa.Column("heal", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mismatches", sa.Integer, nullable=False, server_default="0"),
    # the cursor a match was verified at (a hash): the same report at the same cursor is
    # answered without counting the scope again
    sa.Column("verified", sa.String(64)),
)
# a device's acknowledgement that it removed data: ``purge`` (access ended) or ``wipe`` (an
# administrator asked), with the counts it removed per table
fs_device_receipt = sa.Table(
    "fs_device_receipt",
    metadata,
    sa.Column("receiptid", sa.Uuid, primary_key=True),
    sa.Column("deviceid", sa.String(64), nullable=False, index=True),
    sa.Column("userid", sa.Uuid, nullable=False, index=True),
    sa.Column("app", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("counts", JSONType, nullable=False),  # {"tables": {...}, "outbox": n, "files": n}
    sa.Column("reason", sa.String(512)),
    sa.Column("receivedon", UTCDateTime, nullable=False),
)
# an applied client change's answer, kept per user as well as device: only the user who sent
# the change is ever answered from it (migration 0004 re-keys databases made before)
fs_sync_applied = sa.Table(
    "fs_sync_applied",
    metadata,
    sa.Column("userid", sa.Uuid, primary_key=True),
    sa.Column("deviceid", sa.String(64), primary_key=True),
    sa.Column("changeid", sa.Uuid, primary_key=True),
    sa.Column("result", JSONType, nullable=False),
    sa.Column("appliedon", UTCDateTime, nullable=False, index=True),
)

# -- mobile offline: published profiles, immutable once written ---------------------------

fs_published_profile = sa.Table(
    "fs_published_profile",
    metadata,
    sa.Column("profileid", sa.Uuid, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("publishedon", UTCDateTime, nullable=False),
    sa.Column("publishedby", sa.Uuid),
    sa.Column("snapshot", JSONType, nullable=False),
)
