SELECT 1 FROM "_gristmill"."loads" WHERE "batch_id" = %(b)s LIMIT 1;
INSERT INTO "_gristmill"."loads" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, GETDATE());
DELETE FROM "_gristmill"."offsets" WHERE "log" = %(log)s AND "grp" = %(grp)s;
INSERT INTO "_gristmill"."offsets" VALUES (%(log)s, %(grp)s, %(off)s, GETDATE());
SELECT "offset" FROM "_gristmill"."offsets" WHERE "log" = %(log)s AND "grp" = %(grp)s;
SELECT "pack", "source", SUM("loaded"), SUM("duplicates"), SUM("quarantined") FROM "_gristmill"."loads" WHERE "log" = %(log)s GROUP BY "pack", "source";
INSERT INTO "_gristmill"."quarantine" ("quarantine_id", "pack", "source", "dialect", "reason", "detail", "errors", "event_id", "event_type", "received_at", "raw", "quarantined_at") SELECT "quarantine_id", "pack", "source", "dialect", "reason", "detail", JSON_PARSE("errors"), "event_id", "event_type", "received_at", "raw", GETDATE() FROM "_gm_q";
SELECT "pack", "source", SUM("loaded") AS "loaded", SUM("duplicates") AS "duplicates", SUM("quarantined") AS "quarantined", CAST(NULL AS BIGINT) AS "off" FROM "_gristmill"."loads" WHERE "log" = %(log)s GROUP BY "pack", "source" UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, "offset" FROM "_gristmill"."offsets" WHERE "log" = %(log)s AND "grp" = %(grp)s;
