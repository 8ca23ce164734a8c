# helpdesk.sieve: sorts the mail of the Tails Help Desk into folders
# ===================================================================
#
# The mail server of the Help Desk (helpdesk-milter) reads every message sent to
# support@tails.net and adds headers that say what kind of message it is. This script reads those
# headers and files each message into a folder:
#
#   X-HelpDesk-Class: whisperback   ->  WhisperBack   bug reports sent from inside Tails
#   X-HelpDesk-Class: support       ->  Support       new requests (see "TOPIC FOLDERS" below)
#   X-HelpDesk-Class: followup      ->  Follow-ups    answers in an existing conversation
#   X-HelpDesk-Class: team          ->  Team          mail from other Tails teams
#   X-HelpDesk-Class: automated     ->  Automated     bounces, out-of-office replies, newsletters
#   X-HelpDesk-Class: spam          ->  Spam          what the spam filter caught
#
# and it marks with a star (the IMAP flag \Flagged) every message with X-HelpDesk-Priority: high,
# that is mail from other teams, whichever folder it goes to. Folders that do not exist yet are
# created.
#
# A message WITHOUT these headers (mail that was not sent to the Help Desk address) is left alone:
# it stays in your INBOX. So does a message with a class this script does not know.
#
# HOW TO INSTALL IT
#   Upload this file as your Sieve script with your mail program (in Thunderbird: the "Sieve"
#   add-on) or your webmail's filter settings ("import a Sieve script"), or ask the admins of
#   your mail server. To test it without touching your mailbox, with Dovecot installed:
#       sieve-test helpdesk.sieve message.eml
#   prints the folder that the message would go to.
#
# WHEN CAN THESE HEADERS BE TRUSTED?
#   Only when every message in this mailbox came through helpdesk-milter. The milter deletes any
#   X-HelpDesk-* header that a sender wrote into a message before it adds its own, so on that path
#   nobody can forge a class or a priority. A message that reached this mailbox another way (sent
#   to your personal address, forwarded by another server, delivered to a second address of this
#   mailbox) keeps whatever X-HelpDesk-* headers its sender wrote: anyone could then put a
#   message in "Team" with a star, or hide it in "Spam". Use this script only on a mailbox that
#   receives its mail through the milter, such as the Help Desk's own mailbox.
#
# THE HEADER NAMES
#   "X-HelpDesk-" is the default header_prefix of helpdesk-milter. If the admins changed it,
#   change the names below the same way.
#
# The script uses only standard Sieve: RFC 5228 with fileinto, imap4flags (RFC 5232), mailbox
# (RFC 5490, for :create) and variables (RFC 5229).

require ["fileinto", "imap4flags", "mailbox", "variables"];


# SETTINGS: change the text between the quotes.
# ==============================================

# TOPIC FOLDERS. When the milter recognises a known problem (a "topic" of the Help Desk's reply
# file, such as wifi-realtek) in a new request, it adds for example
#     X-HelpDesk-Topic: wifi-realtek
# With "yes", such a request goes into a subfolder of Support named after the topic, such as
# Support/wifi-realtek; when a request matches several topics, only the first one counts. Other
# requests, and encrypted ones (the milter cannot read them), go into Support itself. With "no",
# every request goes into Support. Topics come and go with the reply file, so subfolders appear
# as new topics are recognised; delete old ones whenever you like.
set "topic_folders" "yes";

# THE SEPARATOR between a folder and its subfolders on your mail server: "/" on most servers.
# Some servers use "." instead (for them, Support.wifi-realtek is a subfolder of Support): if your
# topic folders show up as folders named "Support/wifi-realtek" next to Support instead of
# inside it, write "." here.
set "separator" "/";


# THE RULES. Change the folder names between the quotes if you like (for example "Junk" instead
# of "Spam", if that is your spam folder).
# ==========================================================================================

# High priority (mail from other teams): add a star. This comes first so that the star goes with
# the message into whatever folder it is filed in below.
if header :is "X-HelpDesk-Priority" "high" {
    addflag "\\Flagged";
}

if header :is "X-HelpDesk-Class" "whisperback" {
    fileinto :create "WhisperBack";

} elsif header :is "X-HelpDesk-Class" "support" {
    # The first topic: X-HelpDesk-Topic holds one topic, or several separated by ", ".
    set "topic" "";
    if string :is "${topic_folders}" "yes" {
        if header :matches "X-HelpDesk-Topic" "*,*" {
            set "topic" "${1}";
        } elsif header :matches "X-HelpDesk-Topic" "*" {
            set "topic" "${1}";
        }
    }
    # A topic written by the milter is only letters a-z, digits and "-". Anything else (a
    # separator, a space) did not come from the milter and must not create odd folders.
    if string :matches "${topic}" ["", "*/*", "*.*", "* *"] {
        fileinto :create "Support";
    } else {
        fileinto :create "Support${separator}${topic}";
    }

} elsif header :is "X-HelpDesk-Class" "followup" {
    fileinto :create "Follow-ups";

} elsif header :is "X-HelpDesk-Class" "team" {
    fileinto :create "Team";

} elsif header :is "X-HelpDesk-Class" "automated" {
    fileinto :create "Automated";

} elsif header :is "X-HelpDesk-Class" "spam" {
    fileinto :create "Spam";
}

# Everything else stays in the INBOX (Sieve's "implicit keep").
