"""Valid input of `reports.csv_summary`: a UTF-8 CSV upload and two of its columns (form and API)."""
import codecs
import csv
import hashlib
import io

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

# Bytes read at a time while checking an upload is UTF-8; the header must fit in the first one.
CHECK_CHUNK_BYTES = 64 * 1024


def _header_of(upload: UploadedFile) -> tuple[list[str], str]:
    """The upload's header row and the SHA-256 of its bytes, after checking the whole file is UTF-8 text;
    ValidationError if not."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    digest = hashlib.sha256()
    upload.seek(0)
    head, offset, line = "", 0, 1
    while chunk := upload.read(CHECK_CHUNK_BYTES):
        digest.update(chunk)
        if b"\x00" in chunk:
            raise forms.ValidationError("This is not a CSV file: it contains binary data. Upload a CSV text file.")
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            line += chunk[: exc.start].count(b"\n")
            raise forms.ValidationError(
                f"The file is not UTF-8 text: byte 0x{chunk[exc.start]:02x} on line {line} (byte {offset + exc.start})"
                " cannot be decoded. Save the file as \"CSV UTF-8\" and upload it again."
            ) from None
        if not head:
            head = text
        offset += len(chunk)
        line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise forms.ValidationError("The file is not UTF-8 text: it ends in the middle of a character.") from None
    upload.seek(0)
    if not head.strip():
        raise forms.ValidationError("The file is empty. Upload a CSV whose first line names its columns.")
    try:
        header = next(csv.reader(io.StringIO(head, newline="")))
    except csv.Error as exc:
        raise forms.ValidationError(f"This is not a CSV file: its first line cannot be read ({exc}).") from None
    header = [name.strip() for name in header]
    if len(header) < 2 or "\n" not in head:
        raise forms.ValidationError(
            "This does not look like a CSV file: the first line must name at least two columns, "
            "separated by commas, and data rows must follow."
        )
    return header, digest.hexdigest()


class CsvSummaryForm(forms.Form):
    file = forms.FileField(help_text="A UTF-8 CSV file whose first line names its columns.")
    group_by = forms.CharField(max_length=200, help_text="The column whose values form the groups.")
    value_column = forms.CharField(max_length=200, help_text="The numeric column to count, sum, average, min and max.")

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        limit = settings.CONVEYOR_REPORT_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {limit:,} bytes. Split it or ask an operator "
                "to raise CONVEYOR_REPORT_MAX_UPLOAD_BYTES."
            )
        self.header, self.sha256 = _header_of(upload)
        return upload

    def clean(self) -> dict:
        data = super().clean()
        header = getattr(self, "header", None)
        if header is None:
            return data
        for field in ("group_by", "value_column"):
            column = data.get(field, "").strip()
            if column and column not in header:
                self.add_error(field, f"The file has no column {column!r}; its columns are: {', '.join(header)}.")
        if data.get("group_by") and data.get("group_by") == data.get("value_column"):
            self.add_error("value_column", "Choose a numeric column other than the group-by column.")
        return data


def csv_summary_params_from_form(form: CsvSummaryForm) -> dict:
    """What identifies the upload (its name and the hash of its bytes), never its bytes; nothing is stored here,
    so the same file submitted again with the same idempotency key gives the same params."""
    data = form.cleaned_data
    return {
        "filename": data["file"].name,
        "sha256": form.sha256,
        "group_by": data["group_by"],
        "value_column": data["value_column"],
    }
