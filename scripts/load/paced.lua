-- SPDX-License-Identifier: Apache-2.0
--
-- wrk script for `scripts/loadtest.sh --rate R`: as post.lua, but each connection pauses
-- before its next request, for a random time with mean MEAN_DELAY_MS (exponentially
-- distributed, so the connections do not fall into lockstep). The offered load is then about
-- connections * 1000 / (MEAN_DELAY_MS + latency) requests/s: 64 clinicians' EHR sessions
-- that each sign now and then, instead of 64 clients that send again the instant an answer
-- arrives (post.lua, which measures the queue in front of a saturated service).
--
--   wrk ... -s scripts/load/paced.lua URL -- BODY_FILE EXPECTED_SUBSTRING MEAN_DELAY_MS
--
-- A separate script because wrk decides once, from whether the script defines `delay`,
-- whether to call it at all; post.lua stays a pure closed loop.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post.lua")

local base_init = init
function init(args)
  base_init(args)
  mean_delay_ms = assert(tonumber(args[3]), "MEAN_DELAY_MS must be a number")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function delay()
  return -math.log(1 - math.random()) * mean_delay_ms
end
