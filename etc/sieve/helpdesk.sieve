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
#   your mail server. To turn on topic folders, see "TOPIC FOLDERS" below.
#
# HOW TO TRY IT without delivering anything, on a machine with Dovecot (Debian packages
#   dovecot-core and dovecot-sieve): put this file and a message with its X-HelpDesk-* headers,
#   saved as message.eml, into a directory that everyone may read, go there and run, as root:
#       sieve-test -o mail_uid=nobody -o mail_gid=nogroup helpdesk.sieve message.eml
#   (as another user, without the two "-o" options). It prints "store message in folder:" and
#   the folder that the message would go to. Dovecot reads mail as root only for another user,
#   here nobody: without these options it stops with "Couldn't drop privileges: User is missing
#   UID (see mail_uid setting)"; with them, an error "save: failed to create temporary file" only
#   says that nobody may not save the compiled script next to this file. This run sees no
#   folders, so a request with a topic goes into Support. To see what happens in a real mailbox
#   (see "TOPIC FOLDERS"), add "-l" and its location, and run as its owner, for example
#       sieve-test -o mail_uid=vmail -o mail_gid=vmail -l maildir:/var/mail/helpdesk/Maildir \
#           helpdesk.sieve message.eml
#   where the location is what "doveconf -h mail_location" says, for that user.
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
# (RFC 5490, for :create and mailboxexists) and variables (RFC 5229).

require ["fileinto", "imap4flags", "mailbox", "variables"];


# TOPIC FOLDERS
# =============
# When the milter recognises a known problem (a "topic" of the Help Desk's reply file, such as
# wifi-realtek) in a new request, it adds for example
#     X-HelpDesk-Topic: wifi-realtek
# Such a request can go into a subfolder of Support named after the topic, Support/wifi-realtek;
# when a request matches several topics, only the first one counts. Other requests, and encrypted
# ones (the milter cannot read them), go into Support itself. Topics come and go with the reply
# file, so subfolders appear as new topics are recognised; delete old ones whenever you like.
#
# TO TURN TOPIC FOLDERS ON, create, with your mail program, a folder named "Topics" inside the
# folder Support, once the first request has arrived there. It can stay empty. To turn topic
# folders off, delete it. Without it, every request goes into Support.
#
# Why this step: mail servers write a subfolder in one of two ways, "Support/wifi-realtek" or
# "Support.wifi-realtek", and many refuse the other one. A Sieve script cannot ask which, and a
# folder that the server refuses leaves the request in your INBOX, not even in Support. (This
# happened with an older version of this script on Dovecot with Maildir: its Sieve log said
# "failed to store into mailbox 'Support/wifi-realtek': Invalid mailbox name: Name must not have
# '/' characters".) Your mail program writes "Topics" the way your server wants, so the script
# finds it as "Support/Topics" or as "Support.Topics", and names the topic folders the same way.
# If it finds neither, requests go into Support.
#
# Some servers (those that keep mail in "mbox" files) cannot put a folder inside a folder that
# holds mail: there, your mail program cannot create Topics inside Support once Support has a
# message, and requests keep going into Support. Do not create Topics before Support has mail on
# such a server: Support could then hold only folders, and requests would stay in the INBOX.


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
    if header :matches "X-HelpDesk-Topic" "*,*" {
        set "topic" "${1}";
    } elsif header :matches "X-HelpDesk-Topic" "*" {
        set "topic" "${1}";
    }
    # A topic written by the milter is only letters a-z, digits and "-". Anything else (a
    # separator, a space) did not come from the milter and must not create odd folders. Then
    # the folder Topics inside Support, written with "/" or with ".", says whether and how to
    # name a topic folder (see TOPIC FOLDERS). If you rename Support, rename it on every line.
    if string :matches "${topic}" ["", "*/*", "*.*", "* *"] {
        fileinto :create "Support";
    } elsif mailboxexists "Support/Topics" {
        fileinto :create "Support/${topic}";
    } elsif mailboxexists "Support.Topics" {
        fileinto :create "Support.${topic}";
    } else {
        fileinto :create "Support";
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
