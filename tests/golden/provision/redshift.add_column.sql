ALTER TABLE "marketplace"."marketplace_events" ADD COLUMN "amount_cents" BIGINT;
