-- helpdesk-milter driven by Debian's miltertest (libmilter's MTA side), as tests/miltertest.rs
-- runs it: miltertest -D socket=inet:PORT@127.0.0.1 -s tests/miltertest/triage.lua
-- Every check raises an error; main() runs under pcall so that the error is printed (miltertest
-- itself exits 1 without a word) and the exit status says it failed.

local function check(ok, what)
    if not ok then error(what, 2) end
end

local function ok(result, what)
    check(result == nil, what .. ": " .. tostring(result))
end

-- MAIL FROM, RCPT TO and DATA; the milter's answer to DATA.
local function envelope(conn, from, rcpt)
    ok(mt.mailfrom(conn, from), "mail from")
    ok(mt.rcptto(conn, rcpt), "rcpt to")
    ok(mt.data(conn), "data")
    return mt.getreply(conn)
end

-- Header fields given as {name, value} pairs, then end of header, a body and end of message.
local function message(conn, fields, body)
    for _, f in ipairs(fields) do
        ok(mt.header(conn, f[1], f[2]), "header " .. f[1])
    end
    ok(mt.eoh(conn), "eoh")
    if body then ok(mt.bodystring(conn, body), "body") end
    ok(mt.eom(conn), "eom")
end

local function main()
    local conn = mt.connect(socket, 40, 0.25)
    check(conn ~= nil, "cannot connect to " .. socket)
    ok(mt.negotiate(conn, nil, nil, nil), "negotiate")
    check(mt.test_action(conn, SMFIF_ADDHDRS), "the add-header action is requested")
    check(mt.test_action(conn, SMFIF_CHGHDRS), "the change-header action is requested")
    -- The stages it has no use for are not sent at all.
    check(mt.test_option(conn, SMFIP_NOCONNECT), "no connect information is asked for")
    check(mt.test_option(conn, SMFIP_NOHELO), "no HELO is asked for")

    -- 1. A new request with a forged triage header: the forgery goes, the triage headers come.
    ok(mt.macro(conn, SMFIC_MAIL, "i", "4ABC1DEF"), "macro")
    check(envelope(conn, "<alice@example.org>", "<support@tails.net>") == SMFIR_CONTINUE,
        "DATA of mail for the Help Desk continues")
    message(conn, {
        {"From", "Alice <alice@example.org>"}, {"To", "support@tails.net"},
        {"Subject", "Tor Browser does not start"}, {"Message-ID", "<1@example.org>"},
        {"X-HelpDesk-Class", "team"},
    }, "Hello,\r\nTor Browser does not start since the upgrade.\r\nAlice\r\n")
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Class", "support"), "X-HelpDesk-Class: support added")
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Priority"), "X-HelpDesk-Priority added")
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Encrypted", "no"), "X-HelpDesk-Encrypted: no added")
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Autoreply"), "X-HelpDesk-Autoreply added")
    check(mt.eom_check(conn, MT_HDRDELETE, "X-HelpDesk-Class") or mt.eom_check(conn, MT_HDRCHANGE, "X-HelpDesk-Class"),
        "the forged X-HelpDesk-Class is removed")
    check(not mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Class", "team"), "the forged value is not kept")
    local reply = mt.getreply(conn)
    check(reply == SMFIR_CONTINUE or reply == SMFIR_ACCEPT, "the message is delivered")

    -- 2. Mail that is not for the Help Desk, on the same connection: accepted at DATA.
    check(envelope(conn, "<bob@example.org>", "<someone@example.net>") == SMFIR_ACCEPT,
        "mail not for the Help Desk is accepted at DATA")

    -- 3. A bounce (null sender) to the Help Desk: triaged as automated, never answered.
    envelope(conn, "<>", "<support@tails.net>")
    message(conn, {
        {"From", "Mail Delivery System <MAILER-DAEMON@mx.example.org>"},
        {"Subject", "Undelivered Mail Returned to Sender"},
    }, "This is the mail system at host mx.example.org.\r\n")
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Class", "automated"), "X-HelpDesk-Class: automated added")
    local autoreply = mt.getheader(conn, "X-HelpDesk-Autoreply", 0)
    check(autoreply ~= nil and string.find(autoreply, "^suppressed") ~= nil,
        "a bounce is never answered: X-HelpDesk-Autoreply: " .. tostring(autoreply))

    -- 4. An aborted message, then a last one: nothing of the first carries over.
    ok(mt.mailfrom(conn, "<carol@example.org>"), "mail from")
    ok(mt.rcptto(conn, "<support@tails.net>"), "rcpt to")
    ok(mt.abort(conn), "abort")
    envelope(conn, "<dave@example.org>", "<support@tails.net>")
    message(conn, {{"Subject", "Re: your question"}, {"In-Reply-To", "<2@tails.net>"}})
    check(mt.eom_check(conn, MT_HDRADD, "X-HelpDesk-Class", "followup"), "X-HelpDesk-Class: followup added")

    ok(mt.disconnect(conn), "disconnect")
end

local passed, err = pcall(main)
if not passed then
    print("miltertest: FAILED: " .. tostring(err))
    os.exit(1)
end
print("miltertest: all checks passed")
