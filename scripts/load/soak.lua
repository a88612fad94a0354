-- SPDX-License-Identifier: Apache-2.0
-- wrk script of scripts/soak.sh: one fixed request per wrk process; counts statuses and
-- outcomes per thread and prints one `SOAK {json}` line at the end.
--   wrk ... -s scripts/load/soak.lua URL -- KIND EXPECTED_STATUS BODY_FILE METHOD PATH
-- Globals, so done() can read them from each thread with thread:get().
counts, outcomes = {}, {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  kind = args[1]
  local f = assert(io.open(args[3], "rb"))
  local body = f:read("*a")
  f:close()
  local headers = { ["Content-Type"] = "application/json" }
  if args[4] == "GET" then
    req = wrk.format("GET", args[5])
  else
    req = wrk.format("POST", args[5], headers, body)
  end
end

function request()
  return req
end

-- What an answer is: the first of these markers its body holds.
local answer_kinds = {
  { '"valueCode":"covered"', "covered" },
  { '"valueCode":"indeterminate"', "indeterminate" },
  { '"valueCode":"', "other-outcome" },
  { '"OperationOutcome"', "operation-outcome" },
  { '"cards":[]', "no-card" },
  { '"services"', "discovery" },
}

function response(status, headers, body)
  local s = tostring(status)
  counts[s] = (counts[s] or 0) + 1
  local o = "other"
  for _, k in ipairs(answer_kinds) do
    if body:find(k[1], 1, true) then
      o = k[2]
      break
    end
  end
  outcomes[o] = (outcomes[o] or 0) + 1
end

local function json_map(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local statuses, outs, name = {}, {}, "?"
  for _, t in ipairs(threads) do
    name = t:get("kind") or name
    for k, v in pairs(t:get("counts") or {}) do statuses[k] = (statuses[k] or 0) + v end
    for k, v in pairs(t:get("outcomes") or {}) do outs[k] = (outs[k] or 0) + v end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"kind":"%s","requests":%d,"statuses":%s,"outcomes":%s,"socket_errors":%d,' ..
    '"timeouts":%d,"p50_ms":%.1f,"p99_ms":%.1f,"max_ms":%.1f}\n',
    name, summary.requests, json_map(statuses), json_map(outs),
    e.connect + e.read + e.write + e.timeout, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
