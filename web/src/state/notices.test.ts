import { describe, expect, it } from 'vitest';
import { ApiError } from '../api/client';
import { errorDetails, errorText } from './notices';

describe('errorText', () => {
  it('puts the code in words before the server message', () => {
    expect(errorText(new ApiError(400, '16', 'snapshot has linked clones'))).toBe('In use: snapshot has linked clones');
  });
  it('does not say the same words twice when the message already says them', () => {
    const exists = new ApiError(400, '17', "image 'rbd/vm-100-disk-0' already exists");
    expect(errorText(exists)).toBe("Image 'rbd/vm-100-disk-0' already exists");
    expect(errorDetails(exists)).toBe('Code EEXIST (errno 17), HTTP 400');
  });
});
