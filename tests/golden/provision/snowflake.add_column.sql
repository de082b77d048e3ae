ALTER TABLE "marketplace"."marketplace_events" ADD "amount_cents" BIGINT;
