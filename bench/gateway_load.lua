-- wrk load for bench/gateway.py: one connection per thread, one sensor per thread.
-- Each thread posts its sensor's pre-built gzip bodies (DIR/<thread>/<n>.gz) once, in
-- order, with that sensor's token, one request at a time, counts the events the gateway
-- acknowledged (200 and every item accepted), then writes DIR/<thread>/done and stops.
-- Args: DIR PATH EVENTS_PER_BODY.  wrk itself is stopped by the bench (SIGINT) once every
-- thread is done; done() prints one JSON line with the totals.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function slurp(name)
  local f = assert(io.open(name, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  dir, path, per_body = args[1] .. "/" .. id, args[2], tonumber(args[3])
  local token = slurp(dir .. "/token")
  local n = tonumber(slurp(dir .. "/count"))
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Encoding"] = "gzip",
    ["Content-Type"] = "application/x-ndjson",
  }
  reqs = {}
  for i = 1, n do
    reqs[i] = wrk.format("POST", path, headers, slurp(string.format("%s/%06d.gz", dir, i)))
  end
  answered, acked, failed, first_error = 0, 0, 0, ""
  local f = assert(io.open(dir .. "/ready", "w"))
  f:close()
end

-- By answers, not by calls: wrk also calls request() once to inspect it (thread 0).
function request()
  return reqs[math.min(answered + 1, #reqs)]
end

function response(status, headers, body)
  answered = answered + 1
  local ok = false
  if status == 200 then
    if path == "/v1/events" then
      ok = tonumber(body:match('"accepted":(%d+)')) == per_body
    else
      ok = body:find('"errors":false', 1, true) ~= nil
    end
  end
  if ok then
    acked = acked + per_body
  else
    failed = failed + 1
    if first_error == "" then first_error = status .. " " .. body:sub(1, 200) end
  end
  if answered >= #reqs then
    local f = assert(io.open(dir .. "/done", "w"))
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local acked_all, failed_all, answered_all, err = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    acked_all = acked_all + t:get("acked")
    failed_all = failed_all + t:get("failed")
    answered_all = answered_all + t:get("answered")
    if err == "" then err = t:get("first_error") end
  end
  err = err:gsub('[%c"\\]', " ")
  io.write(string.format('WRKRESULT {"acked":%d,"failed":%d,"answered":%d,"errors":%d,"first_error":"%s"}\n',
    acked_all, failed_all, answered_all,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout, err))
end
