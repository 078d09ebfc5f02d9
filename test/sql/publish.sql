-- plank.grant_publish / plank.revoke_publish / plank.publish_grants: who may publish to
-- NOTIFY channels over WebSocket ({"type":"publish"}; docs/PROTOCOL.md "publish").
-- (The extension is created by pg_regress --load-extension=plank.)
SET client_min_messages = notice;

SELECT * FROM plank.publish_grants;

SELECT plank.grant_publish('chat', 'public');
SELECT plank.grant_publish('room_%', 'regress_publisher');
-- idempotent
SELECT plank.grant_publish('chat', 'public');
SELECT channel, grantee FROM plank.publish_grants ORDER BY channel, grantee;

-- publishing does not grant subscribing, nor the reverse
SELECT count(*) FROM plank.channel_grants WHERE channel IN ('chat', 'room_%');

-- NULL arguments are refused by the table (23502)
SELECT plank.grant_publish(NULL, 'public');
SELECT plank.grant_publish('chat', NULL);

SELECT plank.revoke_publish('chat', 'public');
-- revoking what is not granted does nothing
SELECT plank.revoke_publish('chat', 'public');
SELECT plank.revoke_publish('nothing', 'nobody');
SELECT channel, grantee FROM plank.publish_grants ORDER BY channel, grantee;

-- only superusers and the extension owner may grant; everyone may read the grants
CREATE ROLE regress_plank_nobody;
SET ROLE regress_plank_nobody;
SELECT plank.grant_publish('chat', 'regress_plank_nobody');
SELECT plank.revoke_publish('room_%', 'regress_publisher');
INSERT INTO plank.publish_grants VALUES ('x', 'regress_plank_nobody');
SELECT channel, grantee FROM plank.publish_grants ORDER BY channel, grantee;
RESET ROLE;
DROP ROLE regress_plank_nobody;

-- every function has a comment
SELECT p.proname, obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p WHERE p.pronamespace = 'plank'::regnamespace
   AND p.proname IN ('grant_publish', 'revoke_publish') ORDER BY 1;
SELECT obj_description('plank.publish_grants'::regclass, 'pg_class') IS NOT NULL AS commented;

SELECT plank.revoke_publish('room_%', 'regress_publisher');
SELECT count(*) FROM plank.publish_grants;
