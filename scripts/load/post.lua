-- SPDX-License-Identifier: Apache-2.0
--
-- wrk script for scripts/loadtest.sh: POST one JSON body over and over, check every answer,
-- and print one machine-readable RESULT line at the end.
--
--   wrk ... -s scripts/load/post.lua URL -- BODY_FILE EXPECTED_SUBSTRING
--
-- BODY_FILE is sent as the body of every request (Content-Type: application/json).
-- EXPECTED_SUBSTRING must occur in every 200 answer (e.g. '"valueCode":"covered"'), so that an
-- answer that degraded under load (an indeterminate card because the FHIR fetch passed its
-- deadline) counts as bad rather than as throughput. Answers that are not 200 count as bad too.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  expected = args[2] or ""
  local file = assert(io.open(path, "rb"), "cannot open body file " .. tostring(path))
  local body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json"
  bad = 0
  answered = 0
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or (expected ~= "" and not string.find(body, expected, 1, true)) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad_total, answered_total = 0, 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
    answered_total = answered_total + thread:get("answered")
  end
  local errors = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "answered=%d bad=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    answered_total, bad_total, errors.connect, errors.read, errors.write, errors.timeout))
end
