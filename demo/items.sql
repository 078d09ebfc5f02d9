-- Plank demo schema: table items, tracked by Plank, with updated_at kept by a trigger.
-- Idempotent: safe to run again on a database that already has it.
CREATE EXTENSION IF NOT EXISTS plank;

CREATE TABLE IF NOT EXISTS public.items (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    value       numeric NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE public.items IS 'Plank demo table: changes are pushed live to the page Plank serves.';

CREATE OR REPLACE FUNCTION public.items_touch_updated_at()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION public.items_touch_updated_at() IS 'BEFORE UPDATE trigger of the demo table items: sets updated_at.';

DROP TRIGGER IF EXISTS items_touch_updated_at ON public.items;
CREATE TRIGGER items_touch_updated_at BEFORE UPDATE ON public.items
    FOR EACH ROW EXECUTE FUNCTION public.items_touch_updated_at();

SELECT plank.track('public.items');

-- The role of the demo page's anonymous visitors (plank.anonymous_role in demo.sh):
-- it may read items and nothing else.
-- Plank's check workers log in as plank_authenticator (plank.authenticator): a role that
-- is no superuser and may act only as the roles granted to it (docs/SECURITY.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plank_web') THEN
        CREATE ROLE plank_web NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plank_authenticator') THEN
        CREATE ROLE plank_authenticator LOGIN NOINHERIT;
    END IF;
END;
$$;
GRANT plank_web TO plank_authenticator;
GRANT USAGE ON SCHEMA public TO plank_web;
GRANT SELECT ON public.items TO plank_web;

INSERT INTO public.items (name, value)
SELECT v.name, v.value
  FROM (VALUES ('apple', 3), ('banana', 12), ('cherry', 7.5)) AS v(name, value)
 WHERE NOT EXISTS (SELECT 1 FROM public.items);
